"""Finding skip-units on a traced graph, through a registry of unit rules.

A rule looks at one node and says whether it is where a unit ends (``match``), how to take the
unit out of the graph (``remove``), and what the removal takes beyond the branch's own nodes
(``extra_cost``, e.g. the input channels that a dense layer's consumers lose). The built-in
rules are ``residual`` (an addition of a branch and its shortcut) and ``concat`` (a layer whose
output joins the features it read, DenseNet-style); :func:`register_unit_rule` adds more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import fx

from edgeprune.errors import EdgepruneError
from edgeprune.graphunits._graph import ParamIndex, module_path

NAME_KEY, STAGE_KEY = "edgeprune_unit", "edgeprune_stage"


@dataclass
class Match:
    """What a rule found: the gate point, the nodes that leave with the unit, and its kind."""

    kind: str                 # identity | projection | dense (see edgeprune.units)
    anchor: fx.Node           # the node that names the unit (the addition, or the new features)
    output: fx.Node           # T_l: the branch output, where the gate multiplies
    branch: set[fx.Node]      # removed with the unit
    shortcut: set[fx.Node] = field(default_factory=set)  # kept: a projection's own nodes
    plan: Any = None          # rule-specific removal plan (e.g. channel slices and folds)


@dataclass(frozen=True)
class GraphUnit:
    """One skip-unit of a traced model, in forward order."""

    index: int
    name: str      # the block's module name (plus the branch's main module where one block
    stage: int     # has several units, as transformer blocks do); stable across removals
    kind: str
    rule: str
    output: str    # name of the node whose output is T_l
    match: Match = field(repr=False, compare=False)


class UnitRule(Protocol):
    name: str

    def match(self, gm: fx.GraphModule, node: fx.Node, ctx: dict) -> Match | None: ...

    def remove(self, gm: fx.GraphModule, unit: GraphUnit) -> None: ...

    def extra_cost(self, gm: fx.GraphModule, unit: GraphUnit,
                   node_macs: dict[str, int]) -> tuple[int, int]: ...


_RULES: dict[str, UnitRule] = {}


def register_unit_rule(rule: UnitRule) -> UnitRule:
    """Add a rule (an object with ``name``, ``match``, ``remove``, ``extra_cost``)."""
    _RULES[rule.name] = rule
    return rule


def unit_rules() -> dict[str, UnitRule]:
    from edgeprune.graphunits import dense, residual  # noqa: F401  (their rules register)

    return _RULES


def _matches(gm: fx.GraphModule) -> list[tuple[str, Match]]:
    ctx = {"order": {n: i for i, n in enumerate(gm.graph.nodes)}, "params": ParamIndex(gm)}
    found = []
    for node in gm.graph.nodes:
        for name, rule in unit_rules().items():
            m = rule.match(gm, node, ctx)
            if m is not None:
                found.append((name, m))
                break
    return found, ctx["params"]


def list_units(gm: fx.GraphModule) -> list[GraphUnit]:
    """The skip-units of a traced model (see :func:`edgeprune.graphunits.trace`) in forward
    order."""
    found, params = _matches(gm)
    matches = [m for _, m in found]
    owners = [(_owner(m) or [""])[-1] for m in matches]
    names = _names(matches, owners, params)
    stages = _stages(owners, matches)
    return [GraphUnit(i, names[i], stages[i], m.kind, rule, m.output.name, m)
            for i, (rule, m) in enumerate(found)]


def find_unit(gm: fx.GraphModule, name: str) -> GraphUnit:
    for u in list_units(gm):
        if u.name == name:
            return u
    raise EdgepruneError(f"the model has no unit {name!r} (already removed, or a different "
                         "architecture); name one of the units `edgeprune inspect` lists")


# ---------------------------------------------------------------- names and stages


def stamp_names(gm: fx.GraphModule) -> None:
    """Fix unit names and stages on the anchor nodes, so that removing one unit never renames
    another (a transformer block whose attention unit is gone keeps calling its MLP unit
    ``….mlp``)."""
    for u in list_units(gm):
        u.match.anchor.meta[NAME_KEY] = u.name
        u.match.anchor.meta[STAGE_KEY] = u.stage


def _owner(m: Match) -> list[str]:
    """Module path of the innermost module that holds the whole unit."""
    nodes = [n for n in (*m.branch, m.anchor) if n.op.startswith("call_")]
    paths = [module_path(n) for n in nodes]
    common: list[str] = []
    for level in zip(*paths):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return common


def _main_child(m: Match, owner: str, params: ParamIndex) -> str | None:
    """The branch's heaviest module directly under ``owner`` (``self_attention``, ``mlp``)."""
    weights: dict[str, int] = {}
    prefix = f"{owner}." if owner else ""
    for n in m.branch:
        if n.op in ("call_module", "get_attr") and n.target.startswith(prefix):
            child = n.target[len(prefix):].split(".")[0]
            weights[child] = weights.get(child, 0) + params.owned({n})
    return max(weights, key=weights.get) if weights else None


def _names(matches: list[Match], owners: list[str], params: ParamIndex) -> list[str]:
    stamped = [m.anchor.meta.get(NAME_KEY) for m in matches]
    names = []
    for m, owner, fixed in zip(matches, owners, stamped):
        name = fixed or owner
        if not fixed and (owners.count(owner) > 1 or not owner):
            child = _main_child(m, owner, params)
            name = f"{owner}.{child}" if owner and child else (child or m.anchor.name)
        names.append(name)
    return _unique(names)


def _unique(names: list[str]) -> list[str]:
    out, seen = [], {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n] - 1}")
    return out


def _stages(owners: list[str], matches: list[Match]) -> list[int]:
    """Index of the container that holds the unit's block (ResNet layerN, DenseNet
    denseblockN), in forward order; stamped stages win, so emptied stages keep their number."""
    containers: list[str] = []
    out = []
    for owner, m in zip(owners, matches):
        if STAGE_KEY in m.anchor.meta:
            out.append(m.anchor.meta[STAGE_KEY])
            continue
        container = owner.rpartition(".")[0]
        if container not in containers:
            containers.append(container)
        out.append(containers.index(container))
    return out
