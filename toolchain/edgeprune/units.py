"""Skip-units: the residual blocks and dense layers that MSPIC scores, gates and removes.

The model, from the seeds:

    ResNet:   U_l = α_l · T_l + A_{l-1} · U_{l-1}     (A = identity or a projection shortcut)
    DenseNet: U_l = Concat(α_l · T_l, U_{1:l-1})

``list_units(model)`` finds the units in forward order. Each unit names its *branch end*: the
module whose output is T_l (the residual branch's last BN, or conv for pre-activation blocks; a
dense layer's new channels). Gating and feature capture are forward hooks on that module, so they
work the same on built-in and torchvision models:

- α = 0 on a ResNet unit multiplies T_l by zero, so the block computes exactly its shortcut
  followed by whatever activation it applies after the merge;
- α = 0 on a dense layer zeroes its channels in the concatenation.

These hooks know the zoo's block types. Any other model is pruned as a traced graph
(:func:`prunable` turns it into a ``torch.fx.GraphModule``), and for a graph the functions here
hand over to :mod:`edgeprune.graphunits`, so the prune loop is the same for both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.densenet import _DenseLayer
from torchvision.models.resnet import BasicBlock, Bottleneck

from edgeprune.models.resnet_cifar import PreActBottleneck

# Block type -> attribute of its branch end. The shortcut is always ``downsample``.
_RESIDUAL_BRANCH_END = {BasicBlock: "bn2", Bottleneck: "bn3", PreActBottleneck: "conv3"}

IDENTITY, PROJECTION, DENSE = "identity", "projection", "dense"


@dataclass(frozen=True)
class SkipUnit:
    """One skip-unit of a model, in forward order."""

    index: int          # position among the model's units, 0 = nearest the input
    name: str           # qualified module name of the block or dense layer
    stage: int          # 0-based index of the stage (ResNet layerN / DenseNet denseblockN)
    kind: str           # identity | projection | dense
    module: nn.Module   # the block or dense layer
    branch_end: nn.Module  # its output is T_l; the gate multiplies it

    @property
    def shortcut(self) -> nn.Module | None:
        """The projection shortcut A (None for identity and dense units)."""
        return getattr(self.module, "downsample", None) if self.kind == PROJECTION else None


def mark_stages(model: nn.Module) -> nn.Module:
    """Remember which containers are stages, so that they stay stages when emptied by surgery."""
    for name in _unit_containers(model):
        model.get_submodule(name).edgeprune_stage = True
    return model


def unit_kind(module: nn.Module) -> str | None:
    """identity | projection | dense for a unit module, None for anything else."""
    if isinstance(module, _DenseLayer):
        return DENSE
    if type(module) in _RESIDUAL_BRANCH_END:
        return IDENTITY if module.downsample is None else PROJECTION
    return None


def is_graph(model: nn.Module) -> bool:
    """A traced model, whose units :mod:`edgeprune.graphunits` finds."""
    from torch import fx

    return isinstance(model, fx.GraphModule)


def prunable(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """``model`` itself when its units are the zoo's blocks (the module-level fast path) or it
    is traced already, else a traced copy whose units are found on the graph. A model FX cannot
    trace is a one-line error that suggests torch.export or ``--method none``; so is a
    torch.export program (.pt2), whose ATen graph the unit finder does not read."""
    refuse_exported(model)
    if is_graph(model) or list_units(model):
        return model
    from edgeprune.graphunits import trace

    return trace(model, tuple(input_shape))


EXPORTED_NO_UNITS = (
    "the model is a torch.export program (.pt2): its graph holds ATen operations, not the "
    "layers edgeprune finds, gates and removes skip-units on; `edgeprune build --method none`, "
    "quantize, export and profile take it as it is, or prune the original architecture (its "
    ".pt checkpoint, or --arch NAME with its state_dict)")


def refuse_exported(model: nn.Module) -> None:
    """A one-line error for unit pruning of a torch.export program."""
    from edgeprune.pt2 import is_exported

    if is_exported(model):
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError(EXPORTED_NO_UNITS)


def list_units(model: nn.Module) -> list[SkipUnit]:
    """The model's skip-units in forward order (module registration order, which is forward
    order for every architecture edgeprune builds or accepts)."""
    if is_graph(model):
        from edgeprune import graphunits

        return graphunits.list_units(model)
    units: list[SkipUnit] = []
    containers = _unit_containers(model)
    for name, module in model.named_modules():
        kind = unit_kind(module)
        if kind is None:
            continue
        stage = containers.index(name.rsplit(".", 1)[0])
        end = module if kind == DENSE else getattr(module, _RESIDUAL_BRANCH_END[type(module)])
        units.append(SkipUnit(len(units), name, stage, kind, module, end))
    return units


_STAGE_CONTAINERS = (nn.Sequential, nn.ModuleDict)


def _unit_containers(model: nn.Module) -> list[str]:
    """Names of the stage containers (ResNet layerN, DenseNet denseblockN) in forward order.

    A container counts as a stage when it holds units or once held them: a stage whose units
    were all removed keeps its place, so stage numbers do not shift after pruning.
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, _STAGE_CONTAINERS) and name and (
                any(unit_kind(c) is not None for c in module.children())
                or getattr(module, "edgeprune_stage", False)):
            names.append(name)
    return names


# ---------------------------------------------------------------- gates


def _gate_hook(alpha: float):
    def hook(_module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
        return output * alpha
    return hook


@contextmanager
def gated(model: nn.Module, alphas: Mapping[int, float] | Sequence[float]) -> Iterator[nn.Module]:
    """Within the block, unit ``i`` computes with gate ``alphas[i]`` (1 where not given).

    ``alphas`` is a sequence with one α per unit, or a mapping from unit index to α.
    """
    if is_graph(model):
        from edgeprune import graphunits

        with graphunits.gated(model, alphas) as gm:
            yield gm
        return
    units = list_units(model)
    if not isinstance(alphas, Mapping):
        if len(alphas) != len(units):
            raise ValueError(f"{len(alphas)} gates given for {len(units)} units")
        alphas = dict(enumerate(alphas))
    handles = [units[i].branch_end.register_forward_hook(_gate_hook(float(a)))
               for i, a in alphas.items() if float(a) != 1.0]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def gates_removing(units: Sequence[SkipUnit], removed: Sequence[int]) -> dict[int, float]:
    """Gates that switch off the units with the given indices."""
    removed_set = set(removed)
    return {u.index: 0.0 for u in units if u.index in removed_set}


# ---------------------------------------------------------------- features


@contextmanager
def capture_branch_outputs(model: nn.Module,
                           indices: Sequence[int] | None = None) -> Iterator[dict[int, list]]:
    """Record T_l, flattened per sample, for the chosen units on every forward pass.

    Yields a dict ``index -> list of (batch, dim) float32 CPU tensors``; concatenate after the
    passes. Outputs are cloned, since ResNet blocks add the shortcut into them in place.
    """
    if is_graph(model):
        from edgeprune import graphunits

        with graphunits.capture_branch_outputs(model, indices) as store:
            yield store
        return
    units = list_units(model)
    chosen = range(len(units)) if indices is None else indices
    store: dict[int, list] = {i: [] for i in chosen}

    def make(i: int):
        def hook(_m, _inp, out):
            store[i].append(out.detach().flatten(1).to("cpu", torch.float32).clone())
        return hook

    handles = [units[i].branch_end.register_forward_hook(make(i)) for i in chosen]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
