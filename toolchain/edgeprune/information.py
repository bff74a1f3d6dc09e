"""Mutual information I(T_l; Y) between a skip-unit's branch output and the label.

The estimator is the pairwise-distance upper bound of Kolchinsky & Tracey on a Gaussian mixture
with one component per sample (mean μ_i = the unit's flattened output for sample i, variance σ²):

    I(T;Y) ≤ −(1/n) Σ_i ln (1/n) Σ_j exp(−‖μ_i − μ_j‖² / 2σ²)                         (KL, H(T))
             − Σ_k p_k · [ −(1/n_k) Σ_{i∈k} ln (1/n_k) Σ_{j∈k} exp(−‖μ_i − μ_j‖² / 8σ²) ]
                                                                       (Bhattacharyya, H(T|Y))

Squared distances come from matrix products (‖a‖² + ‖b‖² − 2a·b, clipped at 0) of the *centred*
features (a common offset would otherwise cancel catastrophically), as float32 products over
blocks of ``GRAM_BLOCK`` columns summed in float64: within 1e-6 nats of the all-float64
computation and several times faster. Everything after the products is float64, over row
chunks, so the working memory beyond the features is at most ``chunk_bytes`` (default 64 MiB)
for any n; every sum of exponentials is a log-sum-exp. NaN or inf features are refused.

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
# Large blocks keep the float32 GEMMs efficient: on 2 cores, n = 2000 × d = 16384 took 2.1 s with
# 4096 × 1000 blocks against 6.1 s with 1024 × 256 (whose smaller products waste more than the
# symmetry saves); the float64 sum over blocks keeps the error near 2e-7 of a squared norm.
GRAM_BLOCK = 4096  # feature columns per float32 product, summed in float64
SYM_BLOCK = 1000   # rows per block of the symmetric product (smaller: nearer half the work)
FULL_DIST_BYTES = 256 * 2**20  # up to this, all n² distances are held and computed once
FLOAT32_MIN_WORK = 2**28  # n²·d from which the products run in float32 (blocks summed in f64)
# mi: the bound; mi-shuffle: the bound minus its mean over label shuffles (the label-independent
# part cancels); conditional: −H(T|Y), the bound's label-dependent term alone.
SCORES = ("mi", "mi-shuffle", "conditional")


@dataclass(frozen=True)
class MIConfig:
    """How to estimate I(T; Y): σ² (None = the scaling's default) and the feature scaling."""

    sigma2: float | None = None
    scaling: str = "median"
    chunk_bytes: int = CHUNK_BYTES
    score: str = "mi"        # mi | mi-shuffle | conditional (see SCORES)
    shuffles: int = 8        # label permutations for mi-shuffle
    shuffle_seed: int = 0

    def __post_init__(self) -> None:
        if self.scaling not in DEFAULT_SIGMA2:
            raise EdgepruneError(f"unknown MI scaling {self.scaling!r}; choose one of: "
                                 f"{', '.join(SCALINGS)}")
        if self.sigma2 is not None and not self.sigma2 > 0:
            raise EdgepruneError(f"sigma2 must be positive, got {self.sigma2}")
        if self.score not in SCORES:
            raise EdgepruneError(f"unknown unit score {self.score!r}; choose one of: "
                                 f"{', '.join(SCORES)}")
        if self.score == "mi-shuffle" and self.shuffles < 1:
            raise EdgepruneError(f"mi-shuffle needs at least 1 shuffle, got {self.shuffles}")

    @property
    def effective_sigma2(self) -> float:
        return DEFAULT_SIGMA2[self.scaling] if self.sigma2 is None else float(self.sigma2)


# ---------------------------------------------------------------- the bound


def _as_f64(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    t = t.reshape(len(t), -1).to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise EdgepruneError("the features contain NaN or inf values; check the model's weights "
                             "and the input normalisation before estimating MI")
    return t


def _centred(x: torch.Tensor) -> torch.Tensor:
    # Distances do not change with a common offset, but ‖a‖² + ‖b‖² − 2a·b cancels
    # catastrophically when the offset is large (1e8 cost 0.06 nats before centring).
    return x - x.mean(0, keepdim=True)


def _gram_rows(x32: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """x[lo:hi] · xᵀ from float32 products over column blocks, accumulated in float64: the
    features are centred first, so each float32 block product is accurate to ~1e-7 of the
    typical squared distance, and the float64 sum keeps the blocks' errors from growing."""
    d = x32.shape[1]
    out = torch.zeros(hi - lo, len(x32), dtype=torch.float64)
    for c in range(0, d, GRAM_BLOCK):
        xb = x32[:, c:c + GRAM_BLOCK]
        out += (xb[lo:hi] @ xb.T).to(torch.float64)
    return out


def _row_chunks(n: int, chunk_bytes: int) -> int:
    # One chunk holds a (rows, n) float64 distance block, two same-sized float64 temporaries
    # (the scaled exponents) and a boolean class mask: 25 bytes per entry.
    return max(1, chunk_bytes // (25 * max(n, 1)))


def pairwise_sq_distances(features, *, chunk_bytes: int = CHUNK_BYTES, lo: int = 0,
                          hi: int | None = None, _prepared=None) -> torch.Tensor:
    """Squared Euclidean distances of rows lo..hi−1 to all rows (float64, diagonal 0)."""
    x32, sq = _prepared if _prepared is not None else _prepare(_as_f64(features))
    hi = len(x32) if hi is None else hi
    d = (sq[lo:hi, None] + sq[None, :] - 2.0 * _gram_rows(x32, lo, hi)).clamp_(min=0.0)
    idx = torch.arange(lo, hi)
    d[idx - lo, idx] = 0.0
    return d


def full_sq_distances(features, _prepared=None) -> torch.Tensor:
    """All pairwise squared distances (n, n), float64, symmetric with a zero diagonal. Only
    the blocks on and above the diagonal are multiplied (the rest is their transpose)."""
    xp, sq = _prepared if _prepared is not None else _prepare(_as_f64(features))
    n = len(xp)
    g = torch.empty(n, n, dtype=torch.float64)
    for lo in range(0, n, SYM_BLOCK):
        hi = min(n, lo + SYM_BLOCK)
        block = torch.zeros(hi - lo, n - lo, dtype=torch.float64)
        for c in range(0, xp.shape[1], GRAM_BLOCK):
            xb = xp[:, c:c + GRAM_BLOCK]
            block += (xb[lo:hi] @ xb[lo:].T).to(torch.float64)
        g[lo:hi, lo:] = block
        g[lo:, lo:hi] = block.T
    d = (sq[:, None] + sq[None, :] - 2.0 * g).clamp_(min=0.0)
    d.fill_diagonal_(0.0)
    return d


def _prepare(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xc = _centred(x)
    # float32 products only where they pay: small problems stay all-float64 (exact to ~1e-12)
    fast = len(xc) ** 2 * xc.shape[1] >= FLOAT32_MIN_WORK
    xp = xc.to(torch.float32).contiguous() if fast else xc.contiguous()
    # ‖x_i‖² from the same values the products use, so that d_ii is consistent
    sq = (xp.to(torch.float64) ** 2).sum(1)
    return xp, sq


@dataclass(frozen=True)
class BoundTerms:
    """The two terms of the bound (nats): I(T;Y) ≤ h_t − h_t_y. ``h_t_y_shuffled`` holds the
    conditional term recomputed with shuffled labels (H(T) does not depend on the labels)."""

    h_t: float
    h_t_y: float
    h_t_y_shuffled: tuple[float, ...] = ()

    @property
    def mi(self) -> float:
        return self.h_t - self.h_t_y

    @property
    def mi_shuffle_corrected(self) -> float:
        """I(T;Y) minus its mean over label shuffles: the label-independent part removed."""
        if not self.h_t_y_shuffled:
            raise ValueError("no shuffles were computed")
        return float(np.mean(self.h_t_y_shuffled)) - self.h_t_y


def bound_terms(features, labels, sigma2: float, *, shuffles: int = 0, seed: int = 0,
                chunk_bytes: int = CHUNK_BYTES, scale: float = 1.0,
                distances: torch.Tensor | None = None) -> BoundTerms:
    """H(T) and H(T|Y) of the KDE bound for features (n, ...) and integer labels (n,), with the
    squared distances divided by ``scale`` (1 = raw), and ``shuffles`` label permutations.
    ``distances``: the full (n, n) squared distances if already computed (features unused)."""
    x = _as_f64(features) if distances is None else distances
    y = torch.as_tensor(np.asarray(labels)).to(torch.int64)
    n = len(x)
    if n != len(y) or n < 2:
        raise ValueError(f"need n ≥ 2 samples with one label each, got {n} and {len(y)}")
    rng = np.random.default_rng(seed)
    labelings = [y] + [y[torch.from_numpy(rng.permutation(n))] for _ in range(shuffles)]
    prepared = _prepare(x) if distances is None else None
    lse_all = torch.empty(n, dtype=torch.float64)
    lse_cls = torch.empty(len(labelings), n, dtype=torch.float64)
    rows = _row_chunks(n, chunk_bytes)
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        d = (distances[lo:hi].clone() if distances is not None
             else pairwise_sq_distances(x, lo=lo, hi=hi, _prepared=prepared))
        if scale != 1.0:
            d /= scale
        lse_all[lo:hi] = torch.logsumexp(d / (-2.0 * sigma2), dim=1)
        e = d / (-8.0 * sigma2)
        for j, lab in enumerate(labelings):
            lse_cls[j, lo:hi] = torch.logsumexp(
                e.masked_fill(lab[lo:hi, None] != lab[None, :], -math.inf), dim=1)
    h_t = math.log(n) - lse_all.mean().item()
    conds = [_conditional(lab, lse_cls[j], n) for j, lab in enumerate(labelings)]
    return BoundTerms(h_t, conds[0], tuple(conds[1:]))


def _conditional(y: torch.Tensor, lse: torch.Tensor, n: int) -> float:
    h = 0.0
    for k in torch.unique(y):
        members = y == k
        n_k = int(members.sum())
        h += (n_k / n) * (math.log(n_k) - lse[members].mean().item())
    return h


def mi_upper_bound(features, labels, sigma2: float, *, chunk_bytes: int = CHUNK_BYTES) -> float:
    """The KDE upper bound on I(T; Y) in nats, for features (n, ...) and integer labels (n,)."""
    return bound_terms(features, labels, sigma2, chunk_bytes=chunk_bytes).mi


def median_sq_distance(features, *, max_rows: int = MEDIAN_SAMPLES) -> float:
    """Median pairwise squared distance (i ≠ j), on at most ``max_rows`` evenly spaced rows.

    When more than half the pairs coincide (the median is 0, e.g. many all-zero ReLU maps), the
    median of the non-zero distances is the scale; all-equal features give 0 (no scale)."""
    x = _as_f64(features)
    if len(x) > max_rows:
        x = x[_median_rows(len(x), max_rows)]
    return _median_of(pairwise_sq_distances(x))


def _median_rows(n: int, max_rows: int) -> torch.Tensor:
    return torch.linspace(0, n - 1, max_rows).round().long()


def _median_of(d: torch.Tensor) -> float:
    iu = torch.triu_indices(len(d), len(d), offset=1)
    v = d[iu[0], iu[1]]
    med = float(v.median()) if len(v) else 0.0
    if med <= 0:
        nz = v[v > 0]
        med = float(nz.median()) if len(nz) else 0.0
    return med


def scale_factor(features, scaling: str) -> float:
    """What the squared distances are divided by under ``scaling`` (1 for none)."""
    if scaling == "none":
        return 1.0
    if scaling == "dim":
        return float(torch.as_tensor(features).reshape(len(features), -1).shape[1])
    if scaling == "median":
        med = median_sq_distance(features)
        return med if med > 0 else 1.0
    raise EdgepruneError(f"unknown MI scaling {scaling!r}; choose one of: {', '.join(SCALINGS)}")


def mutual_information(features, labels, config: MIConfig = MIConfig()) -> float:
    """I(T; Y) of one unit's features at the configured scaling and σ²."""
    return unit_score(features, labels, MIConfig(config.sigma2, config.scaling,
                                                 config.chunk_bytes))


def unit_score(features, labels, config: MIConfig = MIConfig()) -> float:
    """The configured score of one unit's features (``config.score``, see SCORES)."""
    shuffles = config.shuffles if config.score == "mi-shuffle" else 0
    return score_from_terms(scaled_terms(features, labels, config, shuffles), config.score)


def scaled_terms(features, labels, config: MIConfig, shuffles: int = 0) -> BoundTerms:
    """The bound's terms at the configured scaling and σ². Where the n² distances fit in
    ``FULL_DIST_BYTES`` they are computed once (symmetric products) and the median scale is
    read from them; otherwise everything runs over row chunks."""
    x = _as_f64(features)
    n = len(x)
    kw = {"shuffles": shuffles, "seed": config.shuffle_seed, "chunk_bytes": config.chunk_bytes}
    if n * n * 8 > FULL_DIST_BYTES:
        return bound_terms(x, labels, config.effective_sigma2,
                           scale=scale_factor(x, config.scaling), **kw)
    d = full_sq_distances(x)
    return bound_terms(None, labels, config.effective_sigma2, scale=_full_scale(x, d, config),
                       distances=d, **kw)


def _full_scale(x: torch.Tensor, d: torch.Tensor, config: MIConfig) -> float:
    """The scaling's divisor, read from the full distances ``d`` where it can be."""
    if config.scaling != "median":
        return scale_factor(x, config.scaling)
    n = len(d)
    sub = _median_rows(n, MEDIAN_SAMPLES) if n > MEDIAN_SAMPLES else slice(None)
    med = _median_of(d[sub][:, sub])
    return med if med > 0 else 1.0


def bootstrap_rows(n: int, draws: int, seed: int = 0) -> list[torch.Tensor]:
    """``draws`` resamples of n row indices with replacement (seeded), shared by all units so
    that one draw is one resampled MI sample."""
    rng = np.random.default_rng([seed, 0xB007])
    return [torch.from_numpy(rng.integers(0, n, n)) for _ in range(draws)]


def bootstrap_terms(features, labels, config: MIConfig, rows: Sequence[torch.Tensor],
                    shuffles: int = 0) -> tuple[BoundTerms, list[BoundTerms]]:
    """The bound's terms on the sample (as :func:`scaled_terms`) and on each resample ``rows``.

    Where the n² distances fit in ``FULL_DIST_BYTES`` they are computed once and every draw
    reads its rows and columns out of them (a repeated row is a repeated point, at distance 0);
    otherwise each draw recomputes its distances. The scale (e.g. the median distance) is the
    sample's: a draw changes which points the estimate averages over, not the unit of length.
    """
    x = _as_f64(features)
    y = torch.as_tensor(np.asarray(labels)).to(torch.int64)
    n, sigma2 = len(x), config.effective_sigma2
    kw = {"shuffles": shuffles, "seed": config.shuffle_seed, "chunk_bytes": config.chunk_bytes}
    if n * n * 8 > FULL_DIST_BYTES:
        scale = scale_factor(x, config.scaling)
        return (bound_terms(x, y, sigma2, scale=scale, **kw),
                [bound_terms(x[r], y[r], sigma2, scale=scale, **kw) for r in rows])
    d = full_sq_distances(x)
    scale = _full_scale(x, d, config)
    main = bound_terms(None, y, sigma2, scale=scale, distances=d, **kw)
    return main, [bound_terms(None, y[r], sigma2, scale=scale, distances=d[r][:, r], **kw)
                  for r in rows]


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
    """The configured score (I(T_l; Y) by default) for the units ``indices`` (positions in
    ``list_units(model)``) on inputs ``x``.

    Branch outputs of several units are captured in one forward pass, as many as fit in
    ``FEATURE_BYTES``, so large models need a few passes instead of one per unit.
    """
    return _per_unit(model, x, indices, lambda f: unit_score(f, y, config), batch_size, on_unit)


def unit_information_bootstrap(model: nn.Module, x: torch.Tensor, y, indices: Sequence[int],
                               config: MIConfig = MIConfig(), *, draws: int, seed: int = 0,
                               batch_size: int = 256,
                               on_unit: Callable[[int, float], None] | None = None
                               ) -> tuple[dict[int, float], list[dict[int, float]]]:
    """The configured score per unit (equal to :func:`unit_information`'s) and the same score
    on ``draws`` bootstrap resamples of the rows of ``x`` (seeded by ``seed``; the same
    resamples for every unit), from one capture and one distance matrix per unit."""
    rows = bootstrap_rows(len(x), draws, seed)
    shuffles = config.shuffles if config.score == "mi-shuffle" else 0

    def fn(f):
        return bootstrap_terms(f, y, config, rows, shuffles)

    def report(i, terms):
        if on_unit:
            on_unit(i, score_from_terms(terms[0], config.score))

    terms = _per_unit(model, x, indices, fn, batch_size, report)
    scores = {i: score_from_terms(t[0], config.score) for i, t in terms.items()}
    return scores, [{i: score_from_terms(t[1][b], config.score) for i, t in terms.items()}
                    for b in range(draws)]


def unit_terms(model: nn.Module, x: torch.Tensor, y, indices: Sequence[int],
               config: MIConfig = MIConfig(), *, shuffles: int = 8,
               batch_size: int = 256) -> dict[int, BoundTerms]:
    """Both terms of the bound per unit (at the configured scaling and σ²), with ``shuffles``
    label permutations: every score of SCORES follows from them without another pass."""
    return _per_unit(model, x, indices, lambda f: scaled_terms(f, y, config, shuffles),
                     batch_size, None)


def score_from_terms(terms: BoundTerms, score: str) -> float:
    if score == "mi":
        return terms.mi
    if score == "mi-shuffle":
        return terms.mi_shuffle_corrected
    return -terms.h_t_y


def _per_unit(model, x, indices, fn, batch_size, on_unit) -> dict:
    from edgeprune import distributed
    from edgeprune.units import capture_branch_outputs

    sizes = _branch_sizes(model, x[:1], indices)
    result: dict = {}
    for group in _groups(list(indices), sizes, len(x)):
        # under torchrun each rank captures its rows; all get every row, in order
        feats = distributed.sharded_rows(
            lambda xs, g=group: _capture(model, xs, g, batch_size, capture_branch_outputs), x)
        for i in group:
            result[i] = fn(feats.pop(i))
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
