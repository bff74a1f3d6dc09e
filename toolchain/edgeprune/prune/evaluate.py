"""Judging a pruning criterion by what it removes (the harness of benchmarks/criteria.py).

- :class:`GatedScorer`: accuracy of one trained model on one split with a set of units gated
  off (α = 0, no fine-tuning), cached per set.
- :func:`reference_subsets`: the sets a removal set is ranked against: every subset of the same
  size where there are at most ``exhaustive_max``, else random subsets with the same number of
  units in every stage (so that parameters and MACs match).
- :func:`percentile`: the mid-rank of a set's accuracy among the reference sets' (0.5 = chance).
- :func:`t_interval`: mean and 95% Student-t half-width over seeds.
- :func:`paired_finetune`: the criterion's set and random draws of the same composition,
  removed and fine-tuned identically, for the paired difference.

Criteria decide on the training (MI sample) and validation splits only; scores here use the split
the caller names (the benchmarks use test, which no criterion sees).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgeprune.units import SkipUnit, gated, list_units

EXHAUSTIVE_MAX = 300
RANDOM_SUBSETS = 200


@dataclass
class GatedScorer:
    """Gated accuracy of ``model`` on ``split`` of ``data`` per removal set (unit positions)."""

    model: nn.Module
    data: object
    split: str = "test"
    _cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.units = list_units(self.model)
        # The whole split as one tensor: every set is scored on the same images in one pass.
        xs, ys = zip(*self.data.batches(self.split, 1024))
        self._x, self._y = torch.cat(xs), torch.cat(ys)

    @torch.no_grad()
    def accuracy(self, removed: Iterable[int]) -> float:
        key = tuple(sorted(int(i) for i in removed))
        if key not in self._cache:
            self.model.eval()
            with gated(self.model, {self.units[i].index: 0.0 for i in key}):
                correct = 0
                for lo in range(0, len(self._x), 500):
                    logits = self.model(self._x[lo:lo + 500])
                    correct += int((logits.argmax(1) == self._y[lo:lo + 500]).sum())
            self._cache[key] = correct / len(self._y)
        return self._cache[key]


def composition(units: Sequence[SkipUnit], removed: Iterable[int]) -> tuple[int, ...]:
    """Units removed per stage."""
    stages = max(u.stage for u in units) + 1
    counts = [0] * stages
    for i in removed:
        counts[units[i].stage] += 1
    return tuple(counts)


def random_same_composition(units: Sequence[SkipUnit], removed: Iterable[int],
                            rng: np.random.Generator) -> tuple[int, ...]:
    """A random set with as many units in every stage as ``removed``."""
    comp = composition(units, removed)
    out: list[int] = []
    for stage, k in enumerate(comp):
        members = [u.index for u in units if u.stage == stage]
        out += [int(i) for i in rng.choice(members, size=k, replace=False)]
    return tuple(sorted(out))


def reference_subsets(units: Sequence[SkipUnit], removed: Sequence[int], *,
                      exhaustive_max: int = EXHAUSTIVE_MAX, n_random: int = RANDOM_SUBSETS,
                      seed: int = 0) -> tuple[list[tuple[int, ...]], str]:
    """The sets to rank ``removed`` against, and how they were chosen ("all" or "random")."""
    m, k = len(units), len(removed)
    if math.comb(m, k) <= exhaustive_max:
        return [tuple(c) for c in itertools.combinations(range(m), k)], "all"
    rng = np.random.default_rng(seed)
    return [random_same_composition(units, removed, rng) for _ in range(n_random)], "random"


def percentile(value: float, reference: Sequence[float]) -> float:
    """Mid-rank of ``value`` among ``reference``: (below + ½·equal) / n; 0.5 is chance."""
    ref = np.asarray(reference, dtype=float)
    below = float((ref < value - 1e-12).sum())
    equal = float((np.abs(ref - value) <= 1e-12).sum())
    return (below + 0.5 * equal) / len(ref)


def set_percentile(scorer: GatedScorer, removed: Sequence[int], **kw) -> dict:
    """Percentile of a removal set's gated accuracy among its reference sets."""
    subsets, how = reference_subsets(scorer.units, removed, **kw)
    accs = [scorer.accuracy(s) for s in subsets]
    acc = scorer.accuracy(removed)
    return {"accuracy": acc, "percentile": percentile(acc, accs), "reference": how,
            "n_reference": len(subsets), "reference_mean": float(np.mean(accs))}


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval (nan half-width for one value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()) if len(v) else math.nan, math.nan
    from scipy.stats import t

    return float(v.mean()), float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def removed_model(model: nn.Module, removed: Sequence[int]) -> nn.Module:
    """A copy of ``model`` with the units at ``removed`` physically removed."""
    from edgeprune.surgery import remove_units

    units = list_units(model)
    out = copy.deepcopy(model)
    remove_units(out, [units[i].name for i in removed])
    return out.eval()


def finetuned_accuracy(model: nn.Module, removed: Sequence[int], data, *, epochs: int,
                       lr: float = 0.01, seed: int = 0, split: str = "test") -> float:
    """Remove, fine-tune (same seed, epochs and lr for every set), and score on ``split``."""
    from edgeprune.train import TrainConfig, evaluate, train

    pruned = removed_model(model, removed)
    if epochs:
        train(pruned, data, TrainConfig(epochs=epochs, lr=lr, seed=seed))
    return evaluate(pruned, data, split).accuracy


def criterion_set(model: nn.Module, data, config) -> tuple[list[int], object]:
    """The units (positions) stage 0 of ``config``'s method removes from ``model``, and the
    stage's context (its MI scores and gated errors are cached there for reuse)."""
    from edgeprune.prune.methods import get_method
    from edgeprune.prune.mspic import mi_sample, stage_context

    config.validate()
    config = config.resolved()
    x, y = mi_sample(data, config)
    ctx = stage_context(0, model, data, config, x, y)
    return sorted(get_method(config.method)(ctx).removed), ctx
