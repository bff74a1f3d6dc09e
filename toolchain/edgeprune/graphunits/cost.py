"""What removing a unit saves, counted the way :mod:`edgeprune.complexity` counts a model.

MACs are attributed to graph nodes: one forward pass with the same Conv2d/Linear hooks as
``complexity.layer_macs``, each firing charged to the node being run. A unit saves its branch's
nodes' MACs and the parameters only its branch holds (a module the branch shares with the rest,
such as a block's one ReLU, stays), plus what its rule reports (a dense layer's consumers lose
input channels).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from edgeprune.complexity import Complexity
from edgeprune.graphunits._graph import ParamIndex, tensors_of
from edgeprune.graphunits.discover import GraphUnit, list_units, unit_rules


class _Charging(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.current: str | None = None

    def run_node(self, n: fx.Node):
        self.current = n.name
        return super().run_node(n)


@torch.no_grad()
def node_macs(gm: fx.GraphModule) -> dict[str, int]:
    """MACs per node for one sample, by node name (only nodes that multiply appear)."""
    interp = _Charging(gm)
    macs: dict[str, int] = {}

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        per_sample = output.numel() // output.shape[0]
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            n = per_sample * (module.in_channels // module.groups) * kh * kw
        else:
            n = per_sample * module.in_features
        macs[interp.current] = macs.get(interp.current, 0) + n

    handles = [m.register_forward_hook(hook) for m in gm.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = gm.training
    gm.eval()
    try:
        interp.run(torch.zeros(1, *gm.edgeprune_input_shape))
    finally:
        gm.train(was_training)
        for h in handles:
            h.remove()
    return macs


def unit_complexity(gm: fx.GraphModule, units: list[GraphUnit] | None = None) -> list[Complexity]:
    """What removing each unit would save (params, MACs), in the order of ``units``."""
    units = list_units(gm) if units is None else units
    macs, index = node_macs(gm), ParamIndex(gm)
    out = []
    for u in units:
        params = index.owned(u.match.branch)
        unit_macs = sum(macs.get(n.name, 0) for n in u.match.branch)
        more_params, more_macs = unit_rules()[u.rule].extra_cost(gm, u, macs)
        out.append(Complexity(params + more_params, unit_macs + more_macs))
    return out


@torch.no_grad()
def branch_l1(gm: fx.GraphModule, unit: GraphUnit, index: ParamIndex | None = None) -> float:
    """Sum of |w| over the parameters that leave the model with the unit's branch (those it
    shares with the rest, such as a projection shortcut's, stay out), the graph form of
    :func:`edgeprune.prune.methods.l1_norm`."""
    index = index or ParamIndex(gm)
    held = tensors_of(gm, unit.match.branch)
    return sum(float(held[i].abs().sum()) for i in index.owned_ids(unit.match.branch))
