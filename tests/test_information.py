"""The MI estimator: agreement with an independent numpy implementation, its limits, ranking."""

import math

import numpy as np
import pytest
import torch
from edgeprune import information
from edgeprune.errors import EdgepruneError
from edgeprune.information import (
    MIConfig,
    empirical_label_entropy,
    mi_upper_bound,
    mutual_information,
    unit_information,
)
from edgeprune.models import create_model
from scipy.special import logsumexp


def numpy_bound(x: np.ndarray, y: np.ndarray, sigma2: float) -> float:
    """The bound of DESIGN.md written out plainly: explicit differences, no chunking."""
    x = x.reshape(len(x), -1).astype(np.float64)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    n = len(x)
    h_t = -np.mean(logsumexp(-d / (2 * sigma2), axis=1) - np.log(n))
    h_t_y = 0.0
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        dk = d[np.ix_(idx, idx)]
        h_k = -np.mean(logsumexp(-dk / (8 * sigma2), axis=1) - np.log(len(idx)))
        h_t_y += len(idx) / n * h_k
    return float(h_t - h_t_y)


@pytest.mark.parametrize("sigma2", [0.05, 0.7, 5.0])
def test_agrees_with_plain_numpy(sigma2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3, 2, 2))
    y = rng.integers(0, 4, size=90)
    x[y == 1] += 0.8  # some structure, so the value is not trivial
    expected = numpy_bound(x, y, sigma2)
    assert mi_upper_bound(x, y, sigma2) == pytest.approx(expected, abs=1e-8)
    # Tiny chunks (a few rows each) must give the same value.
    assert mi_upper_bound(x, y, sigma2, chunk_bytes=5000) == pytest.approx(expected, abs=1e-8)


def test_saturates_at_label_entropy_for_small_sigma():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 50))
    y = rng.integers(0, 10, size=200)
    assert mi_upper_bound(x, y, 1e-6) == pytest.approx(empirical_label_entropy(y), abs=1e-7)
    # Raw features at the paper's σ² = 1e-3 saturate the same way.
    assert mutual_information(x, y, MIConfig(scaling="none")) == pytest.approx(
        empirical_label_entropy(y), abs=1e-7)


def test_near_zero_for_independent_features_and_large_sigma():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 20))
    y = rng.integers(0, 5, size=300)
    mean_d = 2 * 20  # E‖a − b‖² for standard normals in 20 dimensions
    value = mi_upper_bound(x, y, 50.0 * mean_d)
    assert 0 <= value < 0.01


def test_separating_features_score_higher_at_default_scaling():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, size=400)
    noise = rng.normal(size=(400, 256))
    centres = rng.normal(size=(10, 256))
    values = [mutual_information(noise + a * centres[y], y) for a in (0.0, 0.5, 1.5, 3.0)]
    # More class separation, more information, clearly above the bound's floor for structureless
    # features at median scaling (3/(8σ²) = 0.375); and the default is far from saturation.
    assert values == sorted(values) and values[-1] > 1.1 * values[0]
    assert 0 < values[0] < math.log(10) - 1


def test_scaling_makes_the_value_scale_free():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(100, 30))
    y = rng.integers(0, 3, size=100)
    a = mutual_information(x, y, MIConfig(scaling="median"))
    assert a == pytest.approx(mutual_information(1000 * x, y, MIConfig(scaling="median")),
                              abs=1e-9)
    assert a > 0
    # √dim scaling makes the value independent of the width for i.i.d. features instead.
    wide = np.repeat(x, 4, axis=1) / 2  # same distances, four times the dimension
    dim = MIConfig(scaling="dim", sigma2=0.5 / 30)
    assert mutual_information(wide, y, MIConfig(scaling="dim", sigma2=0.5 / 30 / 4)) == \
        pytest.approx(mutual_information(x, y, dim), abs=1e-9)


def test_bad_config_is_a_user_error():
    with pytest.raises(EdgepruneError, match="scaling"):
        MIConfig(scaling="log")
    with pytest.raises(EdgepruneError, match="sigma2"):
        MIConfig(sigma2=0.0)


def test_unit_information_scores_every_unit_in_groups(monkeypatch):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3).eval()
    x = torch.randn(40, 3, 8, 8)
    y = np.arange(40) % 3
    one_pass = unit_information(model, x, y, range(9))
    monkeypatch.setattr(information, "FEATURE_BYTES", 1)  # one unit per forward pass
    seen = []
    per_unit = unit_information(model, x, y, range(9), on_unit=lambda i, v: seen.append(i))
    assert sorted(one_pass) == list(range(9)) and seen == list(range(9))
    assert all(one_pass[i] == pytest.approx(per_unit[i], abs=1e-12) for i in range(9))
    assert all(0 < v <= math.log(3) + 1e-9 for v in one_pass.values())


@pytest.mark.parametrize("offset", [1e6, 1e8])
def test_a_common_offset_does_not_change_the_value(offset):
    # Before centring, ‖a‖² + ‖b‖² − 2a·b cancelled: 1e6 cost 8.5e-7 nats, 1e8 cost 0.06.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 40))
    y = rng.integers(0, 4, size=120)
    x[y == 2] += 0.7
    for scaling in ("median", "none"):
        cfg = MIConfig(scaling=scaling, sigma2=1.0 if scaling == "none" else None)
        assert mutual_information(x + offset, y, cfg) == pytest.approx(
            mutual_information(x, y, cfg), abs=1e-9)


def test_float32_products_stay_within_1e6_of_float64(monkeypatch):
    rng = np.random.default_rng(6)
    y = rng.integers(0, 10, size=300)
    x = rng.normal(size=(300, 3000)) + 0.3 * rng.normal(size=(10, 3000))[y] + 5.0
    monkeypatch.setattr(information, "FLOAT32_MIN_WORK", float("inf"))
    exact = {s: mutual_information(x, y, MIConfig(score=s)) for s in information.SCORES}
    monkeypatch.setattr(information, "FLOAT32_MIN_WORK", 0)
    for s, v in exact.items():
        assert mutual_information(x, y, MIConfig(score=s)) == pytest.approx(v, abs=1e-6)


def test_zero_median_distance_falls_back_to_the_nonzero_distances():
    # Most samples identical (e.g. dead ReLU maps): the median distance is 0, but the rest of
    # the distances still set a scale instead of leaving the features unscaled.
    rng = np.random.default_rng(7)
    x = np.zeros((60, 8))
    x[:15] = rng.normal(size=(15, 8))
    assert information.median_sq_distance(x) > 0
    y = np.arange(60) % 3
    a = mutual_information(x, y)
    assert a == pytest.approx(mutual_information(100 * x, y), abs=1e-9)
    # All equal: nothing to tell the classes apart, and no error.
    assert mutual_information(np.ones((30, 4)), np.arange(30) % 3) == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_features_are_a_user_error(bad):
    x = np.ones((20, 5))
    x[3, 2] = bad
    with pytest.raises(EdgepruneError, match="NaN or inf"):
        mutual_information(x, np.arange(20) % 2)


def test_shuffle_corrected_score_removes_the_label_independent_part():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 5, size=200)
    noise = rng.normal(size=(200, 64))
    informative = noise + 2.0 * rng.normal(size=(5, 64))[y]
    cfg = MIConfig(score="mi-shuffle", shuffles=4)
    # Structureless features score well above 0 by the bound, but ≈ 0 once shuffles are
    # subtracted; informative features keep a clearly positive score.
    assert mutual_information(noise, y) > 0.2
    assert abs(base := information.unit_score(noise, y, cfg)) < 0.02
    assert information.unit_score(informative, y, cfg) > base + 0.05
    with pytest.raises(EdgepruneError, match="score"):
        MIConfig(score="entropy")
