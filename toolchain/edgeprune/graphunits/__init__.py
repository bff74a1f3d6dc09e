"""Skip-units of any model, found, gated and removed on its traced graph.

:func:`trace` turns an ``nn.Module`` into a torch.fx graph (a clear error when FX cannot trace
it). A rule from the registry (:func:`register_unit_rule`) decides which nodes end a unit; two
are built in. ``residual``: an addition whose one input, the branch, forks from the same node as
the other, the shortcut (identity, or a projection such as a strided 1×1 conv + BN, pooling or
padding), and whose nodes feed nothing but that addition: ResNet/ResNeXt/RegNet blocks, inverted
residuals, ConvNeXt blocks and a transformer's ``x + attn(x)`` and ``x + mlp(x)``; stochastic
depth, layer scale and squeeze-excitation inside a branch belong to it. ``concat``: a layer whose
output is concatenated with the features it read (DenseNet). The gate multiplies the branch
output T_l by α before the merge; removal erases the branch's nodes, replaces the addition by the
shortcut (a post-add activation stays) or takes the channels out of every concatenation and of
every BN and linear map that reads them, folding the constant a zeroed channel leaves after BN +
ReLU into the next bias or BN running mean, and then deletes every submodule and parameter no
node uses. The removed model computes what the gated one (α = 0) computes in eval mode, and its
parameters and MACs drop by exactly :func:`unit_complexity`. Unit names are the blocks' module
names (plus the branch's main module where a block holds two units), fixed at trace time.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import fx

from edgeprune.graphunits._graph import cleanup
from edgeprune.graphunits.cost import branch_l1, node_macs, unit_complexity
from edgeprune.graphunits.discover import (
    GraphUnit,
    Match,
    UnitRule,
    find_unit,
    list_units,
    register_unit_rule,
    unit_rules,
)
from edgeprune.graphunits.gates import capture_branch_outputs, gated
from edgeprune.graphunits.trace import propagate_shapes, register_leaf, trace

__all__ = [
    "GraphUnit", "Match", "UnitRule", "branch_l1", "capture_branch_outputs", "find_unit", "gated",
    "list_units", "node_macs", "register_leaf", "register_unit_rule", "remove_units", "trace",
    "unit_complexity", "unit_rules",
]


def remove_units(gm: fx.GraphModule, names: Sequence[str]) -> fx.GraphModule:
    """Remove the named units from the traced model in place, in order; return it."""
    for name in names:
        unit = find_unit(gm, name)
        unit_rules()[unit.rule].remove(gm, unit)
        cleanup(gm)
        propagate_shapes(gm)
    return gm
