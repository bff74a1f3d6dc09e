"""The ``residual`` rule: ``out = branch(x) + shortcut(x)``.

An addition is a unit when one input (the branch) is computed from the same fork as the other
input (the shortcut), and nothing but the addition reads the branch's nodes. The shortcut is the
fork itself (identity unit) or its own chain of nodes (projection unit: strided 1×1 conv + BN,
pooling, padding). When both inputs qualify, the one with more parameters is the branch. What
the branch holds belongs to it: stochastic depth, layer scale, squeeze-excitation, attention.
Removal replaces the addition by the shortcut; what follows the addition (a post-add ReLU) stays.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from edgeprune.graphunits._graph import (
    ancestors,
    exclusive,
    mutates_outside,
    outside_inputs,
    owned_params,
)
from edgeprune.graphunits.discover import GraphUnit, Match, register_unit_rule
from edgeprune.graphunits.trace import shape
from edgeprune.units import IDENTITY, PROJECTION

# The additions a residual merge is written with; extend to accept others.
ADD_FUNCTIONS: set = {operator.add, operator.iadd, torch.add}
ADD_METHODS: set[str] = {"add", "add_"}


def _operands(node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    is_add = ((node.op == "call_function" and node.target in ADD_FUNCTIONS)
              or (node.op == "call_method" and node.target in ADD_METHODS))
    if not is_add or "alpha" in node.kwargs or len(node.args) != 2:
        return None
    a, b = node.args
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or a is b:
        return None
    return a, b


class ResidualRule:
    name = "residual"

    def match(self, gm: fx.GraphModule, node: fx.Node, ctx: dict) -> Match | None:
        operands = _operands(node)
        if operands is None or shape(node) is None:
            return None
        a, b = operands
        found = [m for q, p in ((a, b), (b, a))
                 if (m := self._branch(gm, node, q, p, ctx)) is not None]
        if not found:
            return None
        return max(found, key=lambda m: ctx["params"].owned(m.branch))  # first wins a tie

    def _branch(self, gm: fx.GraphModule, add: fx.Node, q: fx.Node, p: fx.Node,
                ctx: dict) -> Match | None:
        """The unit with branch output ``q`` and shortcut ``p``, if that reading holds."""
        if len(q.users) != 1 or shape(p) != shape(add):  # the shortcut alone must fit
            return None
        branch = exclusive(q, ctx["order"])
        fork = outside_inputs(branch)
        if not fork or not fork <= ancestors(p) | {p}:
            return None
        if owned_params(gm, branch, ctx["params"]) == 0 or mutates_outside(gm, branch):
            return None
        if p in fork:
            return Match(IDENTITY, add, q, branch)
        return Match(PROJECTION, add, q, branch, shortcut=exclusive(p, ctx["order"]))

    def remove(self, gm: fx.GraphModule, unit: GraphUnit) -> None:
        add, m = unit.match.anchor, unit.match
        shortcut = next(x for x in add.args if x is not m.output)
        add.replace_all_uses_with(shortcut)
        gm.graph.erase_node(add)
        for n in sorted(m.branch, key=_position(gm), reverse=True):
            gm.graph.erase_node(n)

    def extra_cost(self, gm, unit, node_macs) -> tuple[int, int]:
        return 0, 0


def _position(gm: fx.GraphModule):
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    return order.__getitem__


register_unit_rule(ResidualRule())
