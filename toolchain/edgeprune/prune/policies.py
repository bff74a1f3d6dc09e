"""Pruning policies: cluster the units by their mutual information, keep one unit per cluster.

A policy is a partition of the active units into clusters; in every cluster one unit is kept and
the others are gated off (α = 0). Units whose information about the label is nearly the same
carry nearly the same information, so one of them is enough. Which one (``KEEP_RULES``): the
paper keeps the smallest index (``first``, nearest the input); ``score`` keeps the highest
score; ``cost`` keeps the unit whose removal alone costs the most validation accuracy, so the
cheap ones go.

Two clusterings (a registry, ``CLUSTERINGS``):

- ``bins`` (the method's): bins of width r·(max I − min I) starting at min I; the unit with the
  top value lies on the upper edge of the last full bin and gets a bin of its own. One policy per
  resolution r.
- ``kmeans``: optimal 1-D k-means (dynamic programming over the sorted values, exact), one policy
  per k.

Stable clusters (``--stable-clusters N``): the scores are recomputed on N bootstrap resamples of
the MI sample, and a policy counts only when the policy of the same parameter removes the same
units in at least a given fraction of the draws (:func:`policy_stability`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """One candidate: its parameter (a resolution r or a k), its clusters and what it removes.

    Clusters and removals hold positions in the scored list (0..m−1, in unit order)."""

    clustering: str
    parameter: float
    clusters: tuple[tuple[int, ...], ...]
    edges: tuple[float, ...] = ()  # bin edges, for the plot (bins only)
    kept: tuple[int, ...] = ()     # the unit kept in each cluster (empty: the first of each)

    @property
    def removed(self) -> tuple[int, ...]:
        kept = set(self.kept) if self.kept else {c[0] for c in self.clusters}
        return tuple(sorted(i for c in self.clusters for i in c if i not in kept))


def bin_clusters(values: Sequence[float], r: float) -> tuple[list[list[int]], list[float]]:
    """Clusters (lists of positions, each sorted) of ``values`` binned at resolution ``r``, and
    the bin edges."""
    if not 0 < r <= 1:
        raise ValueError(f"resolution must be in (0, 1], got {r}")
    lo, hi = min(values), max(values)
    width = r * (hi - lo)
    if width <= 0:  # all equal: one cluster
        return [list(range(len(values)))], [lo]
    bins: dict[int, list[int]] = {}
    top = math.ceil(1 / r - 1e-9)  # the top value's own bin, past the last regular one
    for i, v in enumerate(values):
        b = top if v >= hi else min(int((v - lo) // width), top - 1)
        bins.setdefault(b, []).append(i)
    edges = [lo + k * width for k in range(top)] + [hi]
    return [bins[b] for b in sorted(bins)], edges


def kmeans_clusters(values: Sequence[float], k: int) -> list[list[int]]:
    """Optimal 1-D k-means (least within-cluster squared error) by dynamic programming.

    Clusters are contiguous in sorted order; ties are broken towards the earlier position, so the
    result is deterministic. O(k·m²) for m values: instant for the ≤ 100 units of real models.
    """
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    v = [float(values[i]) for i in order]
    m = len(v)
    k = max(1, min(k, m))
    s1, s2 = [0.0], [0.0]
    for x in v:
        s1.append(s1[-1] + x)
        s2.append(s2[-1] + x * x)

    def sse(a: int, b: int) -> float:  # values a..b−1
        n = b - a
        return max(0.0, s2[b] - s2[a] - (s1[b] - s1[a]) ** 2 / n)

    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(k + 1)]
    cut = [[0] * (m + 1) for _ in range(k + 1)]
    cost[0][0] = 0.0
    for j in range(1, k + 1):
        for b in range(j, m + 1):
            for a in range(j - 1, b):
                c = cost[j - 1][a] + sse(a, b)
                if c < cost[j][b] - 1e-15:
                    cost[j][b], cut[j][b] = c, a
    bounds, b = [], m
    for j in range(k, 0, -1):
        a = cut[j][b]
        bounds.append((a, b))
        b = a
    clusters = [sorted(order[a:b]) for a, b in reversed(bounds)]
    return sorted(clusters, key=lambda c: c[0])


def build_policies(values: Sequence[float], clustering: str, parameters: Sequence[float],
                   priority: Sequence[float] | None = None) -> list[Policy]:
    """One policy per resolution (``bins``) or per k (``kmeans``), in the order given. Each
    cluster keeps its unit of highest ``priority`` (ties: the earliest); None keeps the first."""
    if clustering not in CLUSTERINGS:
        raise ValueError(f"unknown clustering {clustering!r}")
    policies = []
    for p in parameters:
        if clustering == "bins":
            clusters, edges = bin_clusters(values, float(p))
        else:
            clusters, edges = kmeans_clusters(values, int(p)), []
        clusters = sorted(clusters, key=lambda c: c[0])
        kept = () if priority is None else tuple(
            max(c, key=lambda i: (priority[i], -i)) for c in clusters)
        policies.append(Policy(clustering, p, tuple(tuple(c) for c in clusters), tuple(edges),
                               kept))
    return policies


def policy_stability(policies: Sequence[Policy], draws: Sequence[Sequence[float]],
                     priority_fn=None) -> list[float]:
    """For each policy, the fraction of ``draws`` (the units' scores on bootstrap resamples of
    the MI sample) whose policy of the same clustering and parameter removes the same units.
    ``priority_fn(values)`` gives the keep priority for a draw's values (None: keep the first)."""
    if not draws:
        return [1.0] * len(policies)
    agree = [0] * len(policies)
    for values in draws:
        priority = priority_fn(values) if priority_fn else None
        for j, p in enumerate(policies):
            (q,) = build_policies(values, p.clustering, [p.parameter], priority)
            agree[j] += q.removed == p.removed
    return [a / len(draws) for a in agree]


def every_k(m: int) -> list[int]:
    """The k-means policies tried when no ks are given: every count of clusters from m − 1
    (one unit removed) down to 1, so ε, not a resolution grid, decides how many units go."""
    return list(range(max(1, m - 1), 0, -1))


CLUSTERINGS = ("kmeans", "bins")
KEEP_RULES = ("first", "score", "cost")
# What "removes the most" means when a stage picks among the policies within ε: units, or the
# parameters, MACs or estimated target latency the removed units cost (their sum over the
# removed units; latency from edgeprune.prune.latency).
OBJECTIVES = ("units", "params", "macs", "latency")
