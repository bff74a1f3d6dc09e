"""Mutual information I(T_l; Y) between a skip-unit's branch output and the label.

The estimator is the pairwise-distance upper bound of Kolchinsky & Tracey on a Gaussian mixture
with one component per sample (mean μ_i = the unit's flattened output for sample i, variance σ²):

    I(T;Y) ≤ −(1/n) Σ_i ln (1/n) Σ_j exp(−‖μ_i − μ_j‖² / 2σ²)                         (KL, H(T))
             − Σ_k p_k · [ −(1/n_k) Σ_{i∈k} ln (1/n_k) Σ_{j∈k} exp(−‖μ_i − μ_j‖² / 8σ²) ]
                                                                       (Bhattacharyya, H(T|Y))

Everything is float64. Squared distances come from matrix products (‖a‖² + ‖b‖² − 2a·b, clipped
at 0) over row chunks, so the working memory beyond the (n, d) float64 features (8·n·d bytes)
is at most ``chunk_bytes`` (default 64 MiB: three float64 blocks of rows × n, plus a boolean
one) for any n; every sum of exponentials is a log-sum-exp.

σ² only means something against the scale of the features: raw flattened feature maps have
pairwise squared distances in the thousands, so a small σ² (the 1e-3 of the method's authors)
makes every sample its own mixture component and the bound saturates at the empirical H(Y) for
every unit. ``scaling`` therefore rescales each unit's features first:

- ``median`` (default): divide by the median pairwise distance, so that the median squared
  distance is 1; σ² is then relative to the typical distance (default 1.0, chosen with the
  MI-vs-σ² curves of ``benchmarks/mi_sigma.py``: the smallest σ² at which the bound rises with
  class separation on synthetic features and the units' ranking on trained ResNet-20 and
  ResNet-56 no longer changes with σ²; at 0.5 the ResNet-56 curves cross);
- ``dim``: divide the squared distances by the dimension (features / √dim);
- ``none``: raw features, σ² absolute (default 1e-3, the paper's value), for fidelity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeprune.errors import EdgepruneError

DEFAULT_SIGMA2 = {"median": 1.0, "dim": 0.5, "none": 1e-3}
SCALINGS = tuple(DEFAULT_SIGMA2)
CHUNK_BYTES = 64 * 2**20
MEDIAN_SAMPLES = 1000  # rows used to find the median distance (its cost is quadratic)


@dataclass(frozen=True)
class MIConfig:
    """How to estimate I(T; Y): σ² (None = the scaling's default) and the feature scaling."""

    sigma2: float | None = None
    scaling: str = "median"
    chunk_bytes: int = CHUNK_BYTES

    def __post_init__(self) -> None:
        if self.scaling not in DEFAULT_SIGMA2:
            raise EdgepruneError(f"unknown MI scaling {self.scaling!r}; choose one of: "
                                 f"{', '.join(SCALINGS)}")
        if self.sigma2 is not None and not self.sigma2 > 0:
            raise EdgepruneError(f"sigma2 must be positive, got {self.sigma2}")

    @property
    def effective_sigma2(self) -> float:
        return DEFAULT_SIGMA2[self.scaling] if self.sigma2 is None else float(self.sigma2)


# ---------------------------------------------------------------- the bound


def _as_f64(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.reshape(len(t), -1).to(torch.float64)


def _row_chunks(n: int, chunk_bytes: int) -> int:
    # One chunk holds a (rows, n) float64 distance block, two same-sized float64 temporaries
    # (the scaled exponents) and a boolean class mask: 25 bytes per entry.
    return max(1, chunk_bytes // (25 * max(n, 1)))


def mi_upper_bound(features, labels, sigma2: float, *, chunk_bytes: int = CHUNK_BYTES) -> float:
    """The KDE upper bound on I(T; Y) in nats, for features (n, ...) and integer labels (n,)."""
    x = _as_f64(features)
    y = torch.as_tensor(np.asarray(labels)).to(torch.int64)
    n = len(x)
    if n != len(y) or n < 2:
        raise ValueError(f"need n ≥ 2 samples with one label each, got {n} and {len(y)}")
    sq = (x * x).sum(1)
    lse_all = torch.empty(n, dtype=torch.float64)
    lse_cls = torch.empty(n, dtype=torch.float64)
    rows = _row_chunks(n, chunk_bytes)
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        d = (sq[lo:hi, None] + sq[None, :] - 2.0 * (x[lo:hi] @ x.T)).clamp_(min=0.0)
        lse_all[lo:hi] = torch.logsumexp(d / (-2.0 * sigma2), dim=1)
        lse_cls[lo:hi] = torch.logsumexp(
            (d / (-8.0 * sigma2)).masked_fill_(y[lo:hi, None] != y[None, :], -math.inf), dim=1)
    h_t = math.log(n) - lse_all.mean().item()
    h_t_y = 0.0
    for k in torch.unique(y):
        members = y == k
        n_k = int(members.sum())
        h_t_y += (n_k / n) * (math.log(n_k) - lse_cls[members].mean().item())
    return h_t - h_t_y


def median_sq_distance(features, *, max_rows: int = MEDIAN_SAMPLES) -> float:
    """Median pairwise squared distance (i ≠ j), on at most ``max_rows`` evenly spaced rows."""
    x = _as_f64(features)
    if len(x) > max_rows:
        x = x[torch.linspace(0, len(x) - 1, max_rows).round().long()]
    sq = (x * x).sum(1)
    d = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_(min=0.0)
    iu = torch.triu_indices(len(x), len(x), offset=1)
    return float(d[iu[0], iu[1]].median())


def scale_features(features, scaling: str) -> torch.Tensor:
    """The features in float64, rescaled as ``scaling`` says (see the module docstring)."""
    x = _as_f64(features)
    if scaling == "none":
        return x
    if scaling == "dim":
        return x / math.sqrt(x.shape[1])
    if scaling == "median":
        med = median_sq_distance(x)
        return x / math.sqrt(med) if med > 0 else x
    raise EdgepruneError(f"unknown MI scaling {scaling!r}; choose one of: {', '.join(SCALINGS)}")


def mutual_information(features, labels, config: MIConfig = MIConfig()) -> float:
    """I(T; Y) of one unit's features at the configured scaling and σ²."""
    x = scale_features(features, config.scaling)
    return mi_upper_bound(x, labels, config.effective_sigma2, chunk_bytes=config.chunk_bytes)


def empirical_label_entropy(labels) -> float:
    """H(Y) of the labels in nats: the value the bound saturates at as σ² → 0."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------- per unit of a model

FEATURE_BYTES = 512 * 2**20  # float32 branch outputs held at once while scoring


def unit_information(model: nn.Module, x: torch.Tensor, y, indices: Sequence[int],
                     config: MIConfig = MIConfig(), *, batch_size: int = 256,
                     on_unit: Callable[[int, float], None] | None = None) -> dict[int, float]:
    """I(T_l; Y) for the units ``indices`` (positions in ``list_units(model)``) on inputs ``x``.

    Branch outputs of several units are captured in one forward pass, as many as fit in
    ``FEATURE_BYTES``, so large models need a few passes instead of one per unit.
    """
    from edgeprune.units import capture_branch_outputs

    sizes = _branch_sizes(model, x[:1], indices)
    result: dict[int, float] = {}
    for group in _groups(list(indices), sizes, len(x)):
        feats = _capture(model, x, group, batch_size, capture_branch_outputs)
        for i in group:
            result[i] = mutual_information(feats.pop(i), y, config)
            if on_unit:
                on_unit(i, result[i])
    return result


@torch.no_grad()
def _capture(model, x, group, batch_size, capture) -> dict[int, torch.Tensor]:
    model.eval()
    with capture(model, group) as store:
        for lo in range(0, len(x), batch_size):
            model(x[lo:lo + batch_size])
    return {i: torch.cat(store[i]) for i in group}


@torch.no_grad()
def _branch_sizes(model, x1, indices) -> dict[int, int]:
    from edgeprune.units import capture_branch_outputs

    model.eval()
    with capture_branch_outputs(model, indices) as store:
        model(x1)
    return {i: store[i][0].shape[1] for i in indices}


def _groups(indices: list[int], sizes: dict[int, int], n: int) -> list[list[int]]:
    groups: list[list[int]] = [[]]
    used = 0
    for i in indices:
        need = sizes[i] * n * 4
        if groups[-1] and used + need > FEATURE_BYTES:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += need
    return [g for g in groups if g]
