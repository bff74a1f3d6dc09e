"""MINT: filter pruning by the dependency between filters of adjacent layers (Ganesh, Corso and
Yasaei Sekeh, arXiv 2003.08472; the seed 002).

For every group of coupled channels (:mod:`edgeprune.prune.channels`), the filters of layer l are
the group's channels where the next layer reads them, and the filters of layer l+1 are the
outputs of that next layer (its first consumer conv, or the classifier). For each pair (i, j)
MINT estimates the dependency ρ_ij between filter i's and filter j's activations with the
geometric mutual information (GMI) of Yasaei Sekeh and Hero (Entropy 2019): the samples are split
into a joint half (X_a, Y_a) and a half whose Y is randomly permuted (X_b, Y_π(b)), which samples
the product of the marginals; a Euclidean minimal spanning tree is built over both; with R the
number of its edges joining the two halves (the Friedman–Rafsky statistic),

    GMI = 1 − R · (m + n) / (2 m n)                (m, n: sizes of the two halves)

which tends to the Henze–Penrose divergence between the joint and the product of the marginals:
0 for independent filters, up to 1 when the two samples separate completely. The ρ_ij of a layer
pair form a matrix like the weight matrix; its ``percentile``-th percentile is the layer's
threshold, and a filter i is kept when at least one of its ρ_ij reaches it (it passes a share of
the information to some filter j of the next layer); the other filters are physically removed.

Approximations, stated:
- The paper conditions ρ_ij on the other filters of layer l (conditional GMI); this estimates the
  unconditional GMI of each pair, which needs no estimate over the high-dimensional rest.
- A filter's activation map is average-pooled to ``pool`` × ``pool`` per sample (the paper does
  not say how maps are vectorised; pooling keeps the MST's dimension small) and each side is
  scaled to unit mean squared pairwise distance, so neither layer dominates the joint distances.
- Connections below the threshold inside kept filters stay (a dense convolution cannot drop a
  single kernel slice); only whole filters are removed.
- One split and permutation per layer pair (seeded), shared by all its (i, j) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.prune.channels import ChannelGroup, channel_groups

SCOPES = ("all", "internal")  # internal: only groups that pass no addition or concatenation


@dataclass
class MintConfig:
    percentile: float = 50.0   # per-layer threshold: this percentile of the ρ matrix
    samples: int = 200         # images the GMI is estimated on
    pool: int = 2              # activation maps average-pooled to pool × pool
    min_keep: float = 0.1      # keep at least this fraction of a group's channels
    scope: str = "all"         # all | internal
    seed: int = 0

    def validate(self) -> None:
        if not 0 <= self.percentile <= 100:
            raise EdgepruneError(f"MINT percentile must be in 0..100, got {self.percentile}")
        if self.samples < 8:
            raise EdgepruneError(f"MINT needs at least 8 samples, got {self.samples}")
        if self.pool < 1 or not 0 < self.min_keep <= 1:
            raise EdgepruneError("MINT pool must be ≥ 1 and min keep a fraction in (0, 1]")
        if self.scope not in SCOPES:
            raise EdgepruneError(f"unknown MINT scope {self.scope!r}; choose one of: "
                                 f"{', '.join(SCOPES)}")


# ---------------------------------------------------------------- the GMI estimator


def mst_cross_edges(dist: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For a batch of distance matrices (B, P, P): the number of edges of each one's minimal
    spanning tree that join points of different ``labels`` (Prim's algorithm, batched)."""
    b, p, _ = dist.shape
    rows = np.arange(b)
    in_tree = np.zeros((b, p), bool)
    in_tree[:, 0] = True
    best = dist[:, 0, :].copy()
    parent = np.zeros((b, p), np.int64)
    cross = np.zeros(b, np.int64)
    for _ in range(p - 1):
        v = np.argmin(np.where(in_tree, np.inf, best), axis=1)
        cross += labels[v] != labels[parent[rows, v]]
        in_tree[rows, v] = True
        dv = dist[rows, v, :]
        closer = (dv < best) & ~in_tree
        best = np.where(closer, dv, best)
        parent = np.where(closer, v[:, None], parent)
    return cross


def gmi_from_points(joint: np.ndarray, product: np.ndarray) -> float:
    """GMI from explicit samples of the joint and of the product of the marginals."""
    z = np.concatenate([joint, product]).astype(np.float64)
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    labels = np.r_[np.zeros(len(joint), bool), np.ones(len(product), bool)]
    r = int(mst_cross_edges(np.sqrt(d)[None], labels)[0])
    m, n = len(joint), len(product)
    return 1.0 - r * (m + n) / (2.0 * m * n)


def _sq_dists(f: np.ndarray) -> np.ndarray:
    """Per filter: squared pairwise distances between samples, scaled to unit mean.
    f: (samples, filters, dims) -> (filters, samples, samples)."""
    f = np.transpose(f, (1, 0, 2)).astype(np.float64)
    sq = (f ** 2).sum(-1)
    d = np.maximum(sq[:, :, None] + sq[:, None, :] - 2 * f @ np.transpose(f, (0, 2, 1)), 0)
    mean = d.mean(axis=(1, 2), keepdims=True)
    return d / np.where(mean > 0, mean, 1.0)


def gmi_matrix(x: np.ndarray, y: np.ndarray, seed: int = 0, chunk: int = 512) -> np.ndarray:
    """ρ_ij = GMI(x[:, i], y[:, j]) for filters i of one layer and j of the next.
    x: (samples, n, dx), y: (samples, m, dy) -> (n, m)."""
    s = len(x)
    rng = np.random.default_rng(seed)
    order = rng.permutation(s)
    a, b = order[: s // 2], order[s // 2:]
    xs = np.r_[a, b]
    ys = np.r_[a, rng.permutation(b)]  # the second half's Y shuffled: product of marginals
    labels = np.r_[np.zeros(len(a), bool), np.ones(len(b), bool)]
    dx = _sq_dists(x)[:, xs][:, :, xs]
    dy = _sq_dists(y)[:, ys][:, :, ys]
    n, m = len(dx), len(dy)
    pairs = [(i, j) for i in range(n) for j in range(m)]
    cross = np.zeros(len(pairs), np.int64)
    for start in range(0, len(pairs), chunk):
        ii, jj = np.array(pairs[start:start + chunk]).T
        cross[start:start + chunk] = mst_cross_edges(np.sqrt(dx[ii] + dy[jj]), labels)
    k, l_ = len(a), len(b)
    return (1.0 - cross * (k + l_) / (2.0 * k * l_)).reshape(n, m)


# ---------------------------------------------------------------- the criterion


def select_filters(rho: np.ndarray, percentile: float, min_keep: int = 1) -> list[int]:
    """Filters i (rows) to remove: no ρ_ij reaches the percentile threshold of the matrix.
    At least ``min_keep`` filters stay (those with the largest max_j ρ_ij)."""
    threshold = np.percentile(rho, percentile)
    best = rho.max(axis=1)
    removed = [i for i in range(len(rho)) if best[i] < threshold]
    room = len(rho) - min_keep
    if len(removed) > room:
        removed = sorted(sorted(removed, key=lambda i: (best[i], i))[:max(room, 0)])
    return removed


@torch.no_grad()
def capture(model: nn.Module, groups: list[ChannelGroup], x: torch.Tensor, pool: int,
            batch: int = 100) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per group: (its channels as its first consumer reads them, that consumer's outputs),
    each (samples, filters, pool²) after average pooling."""
    modules = dict(model.named_modules())
    wanted = {g.root: g.consumers[0] for g in groups if g.consumers}
    store: dict[str, list] = {r: [[], []] for r in wanted}
    hooks = []
    for root, (name, idxs) in wanted.items():
        def hook(mod, args, out, root=root, idxs=idxs):
            inp = args[0][:, idxs]
            store[root][0].append(_pooled(inp, pool))
            store[root][1].append(_pooled(out, pool))
        hooks.append(modules[name].register_forward_hook(hook))
    model.eval()
    try:
        for start in range(0, len(x), batch):
            model(x[start:start + batch])
    finally:
        for h in hooks:
            h.remove()
    return {r: (np.concatenate(v[0]), np.concatenate(v[1])) for r, v in store.items()}


def _pooled(t: torch.Tensor, pool: int) -> np.ndarray:
    if t.dim() == 4:
        t = nn.functional.adaptive_avg_pool2d(t, min(pool, t.shape[-1]))
        return t.flatten(2).cpu().numpy()
    return t[:, :, None].cpu().numpy()  # a Linear's input or output: one value per filter


def mint_plan(model: nn.Module, x: torch.Tensor, input_shape, config: MintConfig,
              on_group=None) -> tuple[dict[str, list[int]], list[dict]]:
    """The channels MINT removes ({group root: positions}) and a record per group."""
    config.validate()
    groups = [g for g in channel_groups(model, input_shape)
              if g.consumers and (config.scope == "all" or not (g.residual or g.concat))]
    acts = capture(model, groups, x, config.pool)
    plan, records = {}, []
    for t, g in enumerate(groups):
        fx, fy = acts[g.root]
        rho = gmi_matrix(fx, fy, seed=config.seed * 7919 + t)
        keep = max(1, int(np.ceil(config.min_keep * g.channels)))
        removed = select_filters(rho, config.percentile, keep)
        plan[g.root] = removed
        records.append({"group": g.root, "next_layer": g.consumers[0][0],
                        "channels": g.channels, "removed": len(removed),
                        "removed_channels": removed, "residual": g.residual,
                        "concat": g.concat,
                        "threshold": float(np.percentile(rho, config.percentile)),
                        "rho_max_per_filter": [round(float(v), 5) for v in rho.max(axis=1)]})
        if on_group:
            on_group()
    return plan, records


# ---------------------------------------------------------------- the pruning run


def mint_config(config) -> MintConfig:
    """The MINT options of a :class:`~edgeprune.prune.PruneConfig`."""
    return MintConfig(percentile=config.mint_percentile, samples=config.mint_samples,
                      pool=config.mint_pool, min_keep=config.mint_min_keep,
                      scope=config.mint_scope, seed=config.seed)


def prune_filters(loaded, data, config, out_dir, progress=None, record_name: str = "mint"):
    """One MINT pass (the paper's single prune-and-retrain step): score, remove the filters,
    fine-tune; returns (LoadedModel, stage record)."""
    import copy

    from edgeprune.checkpoint import LoadedModel
    from edgeprune.complexity import model_complexity
    from edgeprune.prune.channels import remove_channels
    from edgeprune.prune.mspic import _bar, _finetune
    from edgeprune.train import evaluate

    mc = mint_config(config)
    mc.validate()
    info = copy.deepcopy(loaded.info)
    shape = tuple(info.input_shape or data.input_shape)
    model = copy.deepcopy(loaded.model).cpu().eval()
    s = data.sample("train", mc.samples, seed=config.seed)
    x = torch.from_numpy(data.normalize(s.x))
    before = model_complexity(model, shape)
    base = evaluate(model, data, "val", device=config.device).error
    model.cpu()
    n_groups = len(channel_groups(model, shape))
    plan, groups = mint_plan(model, x, shape, mc,
                             on_group=_bar(progress, f"{record_name}: GMI per layer", n_groups))
    remove_channels(model, plan, shape)
    record = {"method": "mint", "percentile": mc.percentile, "samples": mc.samples,
              "pool": mc.pool, "scope": mc.scope, "groups": groups,
              "channels_removed": sum(len(v) for v in plan.values()),
              "val_error_start": base, "params_before": before.params,
              "macs_before": before.macs}
    record["val_error_removed"] = evaluate(model, data, "val", device=config.device).error
    record["finetune_losses"] = _finetune(model, data, config, 100, progress)
    after = model_complexity(model.cpu(), shape)
    record.update(params_after=after.params, macs_after=after.macs,
                  val_error_finetuned=evaluate(model, data, "val", device=config.device).error)
    model.cpu().eval()
    info.input_shape, info.channels_pruned = shape, True
    return LoadedModel(model, info), record


def prune_model_channels(loaded, data, config, out_dir, progress=None):
    """``--method mint`` (filters only) or ``mspic+mint`` (skip-units by MSPIC first, then
    filters by MINT on the result); writes pruned.pt and mspic.json with both steps."""
    from dataclasses import asdict, replace
    from pathlib import Path

    from edgeprune.atomic import write_json
    from edgeprune.checkpoint import save_checkpoint
    from edgeprune.prune.mspic import PruneResult, prune_model
    from edgeprune.units import list_units

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    units = None
    if config.method == "mspic+mint":
        units = prune_model(loaded, data, replace(config, method="mspic"), out_dir, progress)
        start = units.loaded
    else:
        start = loaded
    pruned, mint = prune_filters(start, data, config, out_dir, progress)
    path = save_checkpoint(out_dir / "pruned.pt", pruned.model, pruned.info)
    from edgeprune.pt2 import write_beside

    write_beside(path, pruned.model, pruned.info)
    first = units.record["stages"][0] if units else mint
    summary = {
        "method": config.method,
        "stages": (units.summary["stages"] if units else 0) + 1,
        "units_before": (units.summary["units_before"] if units
                         else len(list_units(loaded.model))),
        "units_after": len(list_units(pruned.model)),
        "params_before": first["params_before"], "params_after": mint["params_after"],
        "macs_before": first["macs_before"], "macs_after": mint["macs_after"],
        "channels_removed": mint["channels_removed"],
        "val_accuracy_before": 1 - first["val_error_start"],
        "val_accuracy_after": 1 - mint["val_error_finetuned"],
        "removed_units": list(pruned.info.removed_units),
        "file_size_bytes": path.stat().st_size,
    }
    record = {"method": config.method, "config": asdict(config),
              "units": units.record["units"] if units else [],
              "stages": units.record["stages"] if units else [], "mint": mint,
              "summary": summary}
    write_json(out_dir / "mspic.json", record)
    return PruneResult(pruned, summary, record, path)
