"""Physical removal of skip-units: the module graph changes, not a mask.

``remove_units(model, names)`` removes the named units (qualified names in the original model) in
order, so that the result computes exactly what the gated model (α = 0 on those units) computes in
eval mode, with the units' modules and weights gone:

- ResNet identity unit: the block is deleted from its ``nn.Sequential`` by key (``del
  seq._modules[key]``). Names are never re-indexed, so the names of the remaining units stay
  those of the original model and a list of removed names replays on a fresh model. The gated
  block computes ReLU(x); its input is already the output of a ReLU (or a pre-activation block,
  which has none), so deleting it is exact.
- ResNet projection unit: the block becomes a :class:`ShortcutOnly` holding its ``downsample``
  (same attribute name, so state-dict keys stay) and the post-merge ReLU of torchvision's
  BasicBlock/Bottleneck (PreActBottleneck has none).
- DenseNet layer: the layer leaves its ``_DenseBlock``, and every later consumer of its channels
  loses them: later layers' norm1/conv1, then the transition's norm/conv, or after the last block
  ``features.norm5`` and the classifier. A gated layer's channels are zeros, which those
  consumers' BN → ReLU turns into a constant relu(BN(0)); that constant's contribution through
  the following 1×1 conv (or the classifier) is folded into the next BN's running mean (or the
  classifier's bias), so the narrower model is exact in eval mode without new parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision.models.densenet import _DenseLayer, _Transition
from torchvision.models.resnet import BasicBlock, Bottleneck

from edgeprune.errors import EdgepruneError
from edgeprune.units import DENSE, IDENTITY, PROJECTION, is_graph, mark_stages, unit_kind

_POST_MERGE_RELU = (BasicBlock, Bottleneck)  # PreActBottleneck adds without an activation


class ShortcutOnly(nn.Module):
    """What is left of a projection unit whose residual branch was removed: its shortcut, then
    the block's post-merge ReLU if it had one."""

    def __init__(self, downsample: nn.Module, relu: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=False) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.downsample(x))


def remove_units(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """Remove the named skip-units from ``model`` in place, in order; return ``model``. A
    traced model (see :func:`edgeprune.units.prunable`) is rewritten on its graph."""
    if is_graph(model):
        from edgeprune import graphunits

        return graphunits.remove_units(model, names)
    mark_stages(model)  # an emptied stage stays a stage, so stage numbers do not shift
    for name in names:
        remove_unit(model, name)
    return model


def remove_unit(model: nn.Module, name: str) -> None:
    module = _find(model, name)
    kind = unit_kind(module)
    parent, key = _parent(model, name)
    if kind == IDENTITY:
        del parent._modules[key]
    elif kind == PROJECTION:
        parent._modules[key] = ShortcutOnly(module.downsample, isinstance(module, _POST_MERGE_RELU))
    elif kind == DENSE:
        _remove_dense(model, name, module)
    else:
        raise EdgepruneError(f"{name!r} is not a skip-unit of this model; name one of the units "
                             "`edgeprune inspect` lists")


def _find(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise EdgepruneError(f"the model has no unit {name!r} (already removed, or a different "
                             "architecture)") from None


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, key = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), key


# ---------------------------------------------------------------- dense layers


@dataclass
class Consumer:
    """A BN → ReLU → linear map that reads a dense layer's channels, and where to fold the
    constant those channels contribute once gated (the first channels of BN running means, by
    name, or the linear map's bias)."""

    bn: str
    linear: str
    fold_bns: list[str] = field(default_factory=list)
    fold_bias: bool = False


def dense_consumers(model: nn.Module, name: str) -> list[Consumer]:
    """Every module that reads the channels of the dense layer ``name``, in forward order."""
    block_name, _, key = name.rpartition(".")
    block = model.get_submodule(block_name)
    keys = list(block._modules)
    later = keys[keys.index(key) + 1:]
    out = [Consumer(f"{block_name}.{k}.norm1", f"{block_name}.{k}.conv1",
                    fold_bns=[f"{block_name}.{k}.norm2"]) for k in later]
    return out + _after_block(model, block_name)


def _after_block(model: nn.Module, block_name: str) -> list[Consumer]:
    feats_name, _, block_key = block_name.rpartition(".")
    feats = model.get_submodule(feats_name) if feats_name else model
    keys = list(feats._modules)
    pos = keys.index(block_key)
    nxt_key = keys[pos + 1] if pos + 1 < len(keys) else None
    nxt = feats._modules.get(nxt_key) if nxt_key else None
    prefix = f"{feats_name}." if feats_name else ""
    if isinstance(nxt, _Transition):
        # The transition's output is the next block's first channels: every BN of the next
        # block that reads them (each layer's norm1, then the next transition's norm or norm5).
        next_block = keys[pos + 2]
        readers = [f"{prefix}{next_block}.{k}.norm1" for k in feats._modules[next_block]._modules]
        readers.append(_first_bn_after(feats, keys, pos + 2, prefix))
        return [Consumer(f"{prefix}{nxt_key}.norm", f"{prefix}{nxt_key}.conv", readers)]
    if isinstance(nxt, nn.BatchNorm2d) and isinstance(getattr(model, "classifier", None),
                                                      nn.Linear):
        # torchvision DenseNet: norm5 → ReLU → global pool → classifier, channel for channel.
        return [Consumer(f"{prefix}{nxt_key}", "classifier", fold_bias=True)]
    raise EdgepruneError(f"cannot find what reads the output of {block_name!r}; edgeprune "
                         "removes dense layers of torchvision-style DenseNets only")


def _first_bn_after(feats: nn.Module, keys: list[str], pos: int, prefix: str) -> str:
    nxt = feats._modules[keys[pos + 1]]
    if isinstance(nxt, _Transition):
        return f"{prefix}{keys[pos + 1]}.norm"
    if isinstance(nxt, nn.BatchNorm2d):
        return f"{prefix}{keys[pos + 1]}"
    raise EdgepruneError("unexpected DenseNet layout after a dense block")


@torch.no_grad()
def _remove_dense(model: nn.Module, name: str, layer: _DenseLayer) -> None:
    lo = layer.norm1.num_features
    gone = torch.arange(lo, lo + layer.conv2.out_channels)
    for c in dense_consumers(model, name):
        bn, lin = model.get_submodule(c.bn), model.get_submodule(c.linear)
        delta = _gated_contribution(bn, lin, gone)
        keep = _complement(bn.num_features, gone)
        _slice_bn(bn, keep)
        _slice_input(lin, keep)
        if c.fold_bias:
            lin.bias.add_(delta)
        for target in c.fold_bns:
            # BN(z + Δ) = BN with running_mean − Δ, on the channels that received Δ.
            rm = model.get_submodule(target).running_mean
            rm[: len(delta)] -= delta
    parent, key = _parent(model, name)
    del parent._modules[key]


def _gated_contribution(bn: nn.BatchNorm2d, lin: nn.Module, gone: torch.Tensor) -> torch.Tensor:
    """What the zeroed channels ``gone`` add to ``lin``'s output after BN → ReLU (a constant)."""
    if isinstance(lin, nn.Conv2d) and (lin.kernel_size != (1, 1) or lin.padding != (0, 0)
                                       or lin.groups != 1):
        raise EdgepruneError(f"dense consumer conv {lin} is not a plain 1×1 conv")
    bn_zero = bn.bias[gone] - bn.weight[gone] * bn.running_mean[gone] / torch.sqrt(
        bn.running_var[gone] + bn.eps)
    w = lin.weight[:, gone].reshape(lin.weight.shape[0], len(gone))
    return w @ torch.relu(bn_zero)


def _complement(n: int, gone: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[gone] = False
    return mask.nonzero().flatten()


def _slice_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    bn.weight = nn.Parameter(bn.weight.detach()[keep].clone())
    bn.bias = nn.Parameter(bn.bias.detach()[keep].clone())
    bn.running_mean = bn.running_mean[keep].clone()
    bn.running_var = bn.running_var[keep].clone()
    bn.num_features = len(keep)


def _slice_input(lin: nn.Module, keep: torch.Tensor) -> None:
    lin.weight = nn.Parameter(lin.weight.detach()[:, keep].clone())
    if isinstance(lin, nn.Conv2d):
        lin.in_channels = len(keep)
    else:
        lin.in_features = len(keep)


def dense_consumer_savings(model: nn.Module, name: str, macs: dict[str, int]) -> tuple[int, int]:
    """Params and MACs that removing dense layer ``name`` takes from its consumers (the sliced
    BN channels and input columns), given ``layer_macs`` of the model."""
    layer = model.get_submodule(name)
    width = layer.conv2.out_channels
    params = mac = 0
    for c in dense_consumers(model, name):
        lin = model.get_submodule(c.linear)
        n_in = lin.weight.shape[1]
        params += 2 * width + lin.weight[:, :width].numel()  # BN weight + bias, input columns
        mac += macs.get(c.linear, 0) * width // n_in
    return params, mac
