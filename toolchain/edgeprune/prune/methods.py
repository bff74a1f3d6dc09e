"""Pruning methods by name: which active units a stage removes.

Every method sees the same :class:`StageContext` (the model at the start of the stage, its active
units, gated validation error, MI scores on demand) and returns a :class:`Selection`; the loop in
:mod:`edgeprune.prune.mspic` then removes, fine-tunes and checkpoints identically, so criteria
compare at equal compression.

- ``mspic``: cluster the units by their score (one k-means policy per k, or one binning per
  resolution), keep the policy that saves the most of the objective (units, params, MACs or
  estimated target latency)
  with validation error increase ≤ ε (gates only, no retraining).
- ``random``: as many units as MSPIC would remove at this stage (or ``counts[t]``), at random.
- ``cost``: as many units, those whose removal alone costs the least validation accuracy.
- ``l1``: as many units, those with the smallest L1 norm of their removable weights (the
  residual branch of a projection unit, the whole layer otherwise; on a traced graph, the
  parameters that leave with the unit's branch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.prune.policies import Policy, build_policies, policy_stability
from edgeprune.units import PROJECTION, SkipUnit, gated, is_graph


@dataclass
class Selection:
    """What a method chose at one stage. ``removed`` holds positions in the active-unit list."""

    removed: list[int]
    policies: list[dict] = field(default_factory=list)  # records for mspic.json
    chosen: int | None = None                             # index into ``policies``
    scores: dict[str, float] | None = None                # per unit name (MI or L1)
    score_kind: str | None = None
    gated_error: float | None = None                      # val error with ``removed`` gated off


@dataclass
class StageContext:
    """The state a method decides on. ``mi()`` and ``gated_error()`` are computed lazily and
    cached, so a baseline that asks MSPIC for its count pays for the scoring once."""

    stage: int
    model: nn.Module
    units: list[SkipUnit]
    base_error: float
    epsilon: float
    parameters: list[float]   # resolutions (bins) or ks (kmeans)
    clustering: str
    seed: int
    count: int | None         # a fixed number of units to remove (baselines), else None
    score_fn: Callable[[], dict[int, float]]
    error_fn: Callable[[tuple[int, ...]], float]
    on_policy: Callable[[], None] | None = None
    keep: str = "first"               # which unit a cluster keeps: first | score | cost
    reference_error: float | None = None  # ε is measured from here (None: base_error)
    objective: str = "units"          # units | params | macs | latency: what the choice maximises
    costs_fn: Callable[[], list] | None = None  # per unit: what removing it saves (.params, ...)
    # stable clusters: the scores on bootstrap resamples of the MI sample (None: off), and the
    # fraction of draws in which a policy must remove the same units to count
    draws_fn: Callable[[], list[dict[int, float]]] | None = None
    stable_fraction: float = 0.5
    _errors: dict = field(default_factory=dict)
    _mi: dict | None = None
    _costs: list | None = None
    _draws: list | None = None

    @property
    def reference(self) -> float:
        return self.base_error if self.reference_error is None else self.reference_error

    def single_costs(self) -> list[float]:
        """Gated validation error with each unit removed alone (cached)."""
        return [self.gated_error((i,)) for i in range(len(self.units))]

    def keep_priority(self, values: list[float]) -> list[float] | None:
        if self.keep == "first":
            return None
        if self.keep == "score":
            return list(values)
        return self.single_costs()

    def saving(self, removed) -> float:
        """What removing ``removed`` saves, in the objective's unit (the sum over the units)."""
        if self.objective == "units" or self.costs_fn is None:
            return float(len(removed))
        if self._costs is None:
            self._costs = self.costs_fn()
        return float(sum(getattr(self._costs[i], self.objective) for i in removed))

    def mi(self) -> dict[int, float]:
        if self._mi is None:
            self._mi = self.score_fn()
        return self._mi

    def draws(self) -> list[dict[int, float]]:
        """The scores on the bootstrap draws (cached; computed with ``mi()``'s where both come
        from one capture)."""
        if self._draws is None:
            self._draws = self.draws_fn() if self.draws_fn else []
        return self._draws

    def gated_error(self, removed) -> float:
        key = tuple(sorted(removed))
        if key not in self._errors:
            self._errors[key] = self.error_fn(key)
        return self._errors[key]


MethodFn = Callable[[StageContext], Selection]
_METHODS: dict[str, MethodFn] = {}


def register_method(name: str) -> Callable[[MethodFn], MethodFn]:
    def add(fn: MethodFn) -> MethodFn:
        _METHODS[name] = fn
        return fn
    return add


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> MethodFn:
    if name not in _METHODS:
        raise EdgepruneError(f"unknown pruning method {name!r}; choose one of: "
                             f"{', '.join(list_methods())}")
    return _METHODS[name]


# ---------------------------------------------------------------- methods


@register_method("mspic")
def mspic(ctx: StageContext) -> Selection:
    mi = ctx.mi()
    values = [mi[i] for i in range(len(ctx.units))]
    if ctx.count is not None:
        # A fixed count: the one k-means policy with m − count clusters removes exactly that
        # many units (ε is not consulted; the count is the caller's decision).
        m = len(values)
        policies = build_policies(values, "kmeans", [max(1, m - min(ctx.count, m - 1))],
                                  ctx.keep_priority(values))
        err = ctx.gated_error(policies[0].removed) if policies[0].removed else ctx.base_error
        rec = _policy_record(ctx, policies[0], err)
        return Selection(list(policies[0].removed), [rec], 0, _by_name(ctx, mi), "mi", err)
    policies = build_policies(values, ctx.clustering, ctx.parameters, ctx.keep_priority(values))
    stability = _stability(ctx, policies)
    records = []
    for p, st in zip(policies, stability):
        err = ctx.gated_error(p.removed) if p.removed else ctx.base_error
        records.append(_policy_record(ctx, p, err))
        if st is not None:
            records[-1].update(stability=st, stable=st >= ctx.stable_fraction - 1e-12)
        if ctx.on_policy:
            ctx.on_policy()
    chosen = _choose(records)
    removed = list(policies[chosen].removed) if chosen is not None else []
    return Selection(removed, records, chosen, _by_name(ctx, mi), "mi",
                     records[chosen]["val_error"] if chosen is not None else None)


@register_method("random")
def random_units(ctx: StageContext) -> Selection:
    count, sel = _count(ctx)
    rng = np.random.default_rng([ctx.seed, ctx.stage])
    removed = sorted(int(i) for i in rng.choice(len(ctx.units), size=count, replace=False))
    return _baseline(ctx, sel, removed)


@register_method("l1")
def l1_units(ctx: StageContext) -> Selection:
    count, sel = _count(ctx)
    norms = l1_norms(ctx.model, ctx.units)
    removed = sorted(sorted(norms, key=lambda i: (norms[i], i))[:count])
    out = _baseline(ctx, sel, removed)
    out.scores, out.score_kind = _by_name(ctx, norms), "l1"
    return out


@register_method("cost")
def lowest_cost_units(ctx: StageContext) -> Selection:
    """As many units, those whose removal alone raises the gated validation error least (one
    gated evaluation per unit). In the criterion harness this greedy baseline matched or beat
    MSPIC at equal size (README, "Does MSPIC beat chance?")."""
    count, sel = _count(ctx)
    costs = ctx.single_costs()
    removed = sorted(sorted(range(len(costs)), key=lambda i: (costs[i], i))[:count])
    out = _baseline(ctx, sel, removed)
    out.scores, out.score_kind = _by_name(ctx, dict(enumerate(costs))), "gated val error"
    return out


def l1_norms(model: nn.Module, units) -> dict[int, float]:
    """Each unit's L1 norm by index: module-level units by :func:`l1_norm`, units of a traced
    graph by the same sum over the parameters that leave with their branch."""
    if is_graph(model):
        from edgeprune.graphunits import branch_l1
        from edgeprune.graphunits._graph import ParamIndex

        index = ParamIndex(model)
        return {u.index: branch_l1(model, u, index) for u in units}
    return {u.index: l1_norm(u) for u in units}


def l1_norm(unit: SkipUnit) -> float:
    """Sum of |w| over the unit's removable parameters (a projection keeps its shortcut)."""
    total = 0.0
    for name, p in unit.module.named_parameters():
        if unit.kind == PROJECTION and name.startswith("downsample."):
            continue
        total += float(p.detach().abs().sum())
    return total


def _filters_not_units(ctx: StageContext) -> Selection:
    raise EdgepruneError("mint removes filters, not units: run it through prune_model")


# Filter pruning (edgeprune.prune.mint) has its own loop; registered so that its names are valid
# --method choices wherever methods are listed.
register_method("mint")(_filters_not_units)
register_method("mspic+mint")(_filters_not_units)


# ---------------------------------------------------------------- helpers


def _policy_record(ctx: StageContext, p: Policy, err: float) -> dict:
    names = [u.name for u in ctx.units]
    return {
        "clustering": p.clustering,
        "parameter": p.parameter,
        "clusters": [[names[i] for i in c] for c in p.clusters],
        "edges": list(p.edges),
        "removed": [names[i] for i in p.removed],
        "val_error": err,
        "error_increase": err - ctx.base_error,
        "saving": ctx.saving(p.removed),
        "objective": ctx.objective,
        "qualifies": err - ctx.reference <= ctx.epsilon + 1e-12,
    }


def _stability(ctx: StageContext, policies: list[Policy]) -> list[float | None]:
    """Per policy, the fraction of bootstrap draws that give it again (None: not asked)."""
    if ctx.draws_fn is None:
        return [None] * len(policies)
    m = len(ctx.units)
    draws = [[d[i] for i in range(m)] for d in ctx.draws()]
    return policy_stability(policies, draws, ctx.keep_priority)


def _choose(records: list[dict]) -> int | None:
    """The qualifying (and, with stable clusters, stable) policy that saves the most of the
    objective (then: more units, lower error, first given)."""
    best = None
    for i, r in enumerate(records):
        if not r["qualifies"] or not r["removed"] or r.get("stable") is False:
            continue
        key = (-r["saving"], -len(r["removed"]), r["val_error"], i)
        if best is None or key < best[0]:
            best = (key, i)
    return best[1] if best else None


def _count(ctx: StageContext) -> tuple[int, Selection | None]:
    if ctx.count is not None:
        return min(ctx.count, len(ctx.units)), None
    sel = mspic(ctx)
    return len(sel.removed), sel


def _baseline(ctx: StageContext, ref: Selection | None, removed: list[int]) -> Selection:
    err = ctx.gated_error(removed) if removed else None
    if ref is None:
        return Selection(removed, gated_error=err)
    # Keep MSPIC's policies (they fixed the count) for the record and the plot.
    return Selection(removed, ref.policies, ref.chosen, ref.scores, ref.score_kind, err)


def _by_name(ctx: StageContext, values: dict[int, float]) -> dict[str, float]:
    return {ctx.units[i].name: float(v) for i, v in sorted(values.items())}


@torch.no_grad()
def gated_val_error(model: nn.Module, units: list[SkipUnit], removed, data,
                    device: str = "cpu") -> float:
    """Validation error of ``model`` with the units at positions ``removed`` gated off."""
    from edgeprune.train import evaluate

    with gated(model, {units[i].index: 0.0 for i in removed}):
        return evaluate(model, data, "val", device=device).error
