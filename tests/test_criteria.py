"""The default MSPIC must choose better than chance: its removal set's gated test accuracy
ranks above the median of all same-size subsets (the harness of benchmarks/criteria.py)."""

from __future__ import annotations

import pytest
from edgeprune.checkpoint import data_for_model, load_model
from edgeprune.prune import PruneConfig
from edgeprune.prune.evaluate import (
    GatedScorer,
    criterion_set,
    percentile,
    reference_subsets,
    set_percentile,
    t_interval,
)
from edgeprune.units import list_units


def test_percentile_is_a_mid_rank():
    assert percentile(0.5, [0.1, 0.5, 0.9, 0.9]) == pytest.approx((1 + 0.5) / 4)
    assert percentile(1.0, [0.1, 0.2]) == 1.0 and percentile(0.0, [0.1, 0.2]) == 0.0
    mean, hw = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hw == pytest.approx(2.4841, abs=1e-3)


def test_reference_sets_are_exhaustive_or_match_the_composition(resnet20_digits):
    units = list_units(resnet20_digits.model)
    subsets, how = reference_subsets(units, [0, 4, 8])
    assert how == "all" and len(subsets) == 84 and len(set(subsets)) == 84
    subsets, how = reference_subsets(units, [0, 4, 8], exhaustive_max=10, n_random=50)
    assert how == "random" and len(subsets) == 50
    assert all(sorted(units[i].stage for i in s) == [0, 1, 2] for s in subsets)


@pytest.mark.parametrize("k", [2, 3])
def test_default_mspic_beats_chance(resnet20_digits_converged_path, digits, k):
    loaded = load_model(resnet20_digits_converged_path)
    data = data_for_model(loaded, digits)
    removed, _ = criterion_set(loaded.model, data, PruneConfig(counts=[k]))
    assert len(removed) == k
    result = set_percentile(GatedScorer(loaded.model, data, "test"), removed)
    assert result["reference"] == "all"
    assert result["percentile"] > 0.5, result


def test_default_chosen_by_epsilon_beats_chance(resnet20_digits_converged_path, digits):
    """The way `prune` runs: ε (not a fixed count) decides the set, from k-means policies for
    every k."""
    loaded = load_model(resnet20_digits_converged_path)
    data = data_for_model(loaded, digits)
    removed, ctx = criterion_set(loaded.model, data, PruneConfig(max_error_increase=0.1))
    assert len(ctx.parameters) == len(ctx.units) - 1  # one policy per k
    assert removed, "the default removed nothing at ε = 0.1"
    result = set_percentile(GatedScorer(loaded.model, data, "test"), removed)
    assert result["percentile"] > 0.5, result
