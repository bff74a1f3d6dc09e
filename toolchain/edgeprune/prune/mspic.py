"""The multi-stage loop: score, cluster, evaluate with gates, remove, fine-tune, checkpoint.

For t = 0..N−1: the method (``mspic``, ``random`` or ``l1``) picks units of the model at the
start of the stage, judging policies by their gated error on the validation split (never test);
surgery removes the picked units; ``edgeprune.train.train`` fine-tunes from the current weights
(small learning rate, cosine); the stage is checkpointed under ``out_dir/stages``. The loop stops
early when a stage removes nothing or the target reduction is met.

Resume: each finished stage writes ``stages/stage_T.pt`` and ``stages/stage_T.json`` with a
fingerprint of the input model, data and every option that changes results. With ``resume`` the
loop restarts after the last matching stage; since every stage is seeded by (seed, t) and the
checkpoint holds the exact weights, the result equals an uninterrupted run's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from edgeprune import distributed
from edgeprune.atomic import write_json
from edgeprune.checkpoint import LoadedModel, ModelInfo, build_arch, load_model, save_checkpoint
from edgeprune.complexity import model_complexity, unit_complexity
from edgeprune.data import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.information import (
    SCALINGS,
    SCORES,
    MIConfig,
    unit_information,
    unit_information_bootstrap,
)
from edgeprune.prune.methods import StageContext, gated_val_error, get_method, list_methods
from edgeprune.prune.policies import CLUSTERINGS, KEEP_RULES, OBJECTIVES, every_k
from edgeprune.surgery import remove_units
from edgeprune.train import TrainConfig, evaluate, train
from edgeprune.units import list_units, prunable, refuse_exported

TARGET_METRICS = ("units", "params", "macs")
# What ε bounds: stage = the gated val error's increase over the stage's start; budget = its
# increase over the original model (the drift over stages stays ≤ ε); absolute = the gated val
# error itself (the paper's "Test error < ε^t").
EPSILON_MODES = ("stage", "budget", "absolute")
VARIANTS = ("default", "paper")
# --variant paper: the procedure exactly as published (Algorithm 1 of the seed paper)
PAPER = {"scaling": "none", "sigma2": None, "score": "mi", "keep": "first",
         "epsilon_mode": "absolute", "clustering": "bins", "objective": "units"}


@dataclass
class PruneConfig:
    """Options of ``edgeprune prune`` (and the ``[prune]`` overrides of ``edgeprune build``)."""

    method: str = "mspic"              # mspic | random | l1
    stages: int = 3
    # one list for every stage, or one list per stage
    resolutions: list = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.2, 0.3])
    max_error_increase: float | list = 0.02  # ε (absolute val error), or one per stage
    finetune_epochs: int = 3
    lr: float = 0.01                   # fine-tuning learning rate (cosine to 0)
    batch_size: int = 128              # fine-tuning mini-batch
    samples: int = 2000                # training images for the MI estimate
    sigma2: float | None = None        # None = the scaling's default
    scaling: str = "median"            # median | dim | none (raw σ², the paper's)
    # kmeans with a policy for every k ranked units best when ε chooses the set
    # (benchmarks/criteria.py, README); bins is the paper's clustering (--variant paper)
    clustering: str = "kmeans"         # kmeans | bins
    ks: list | None = None             # kmeans: k per policy (default: every k from 1 to m−1)
    objective: str = "macs"            # what the chosen policy removes most of (OBJECTIVES)
    # objective = latency: the target whose roofline estimate (targets/*.toml) ranks the
    # policies, by name or as a TOML file, and the precision it is estimated at
    target: str | None = None
    target_file: str | None = None
    latency_precision: str = "fp32"
    target_reduction: float | None = None  # stop once this fraction of target_metric is gone
    target_metric: str = "params"      # units | params | macs
    counts: list | None = None         # baselines: units to remove per stage (else MSPIC's count)
    variant: str = "default"           # default | paper (raw σ², earliest kept, absolute ε)
    score: str = "conditional"         # mi | mi-shuffle | conditional (information.SCORES);
    # conditional (−H(T|Y)) ranked units best in benchmarks/criteria.py (README)
    keep: str = "first"                # which unit a cluster keeps: first | score | cost
    epsilon_mode: str = "stage"        # stage | budget | absolute (see EPSILON_MODES)
    shuffles: int = 8                  # label shuffles for score = mi-shuffle
    # stable clusters: bootstrap the MI sample this many times (0 = off) and let a policy count
    # only if the same policy removes the same units in ≥ stable_fraction of the draws
    stable_clusters: int = 0
    stable_fraction: float = 0.5
    # --method mint / mspic+mint (filters, edgeprune.prune.mint)
    mint_percentile: float = 90.0      # per-layer threshold: percentile of the GMI matrix
    mint_samples: int = 200            # training images for the GMI estimate
    mint_pool: int = 2                 # activation maps pooled to pool × pool
    mint_min_keep: float = 0.1         # keep at least this fraction of each group
    mint_scope: str = "all"            # all | internal (no residual/concat groups)
    seed: int = 0
    resume: bool = False
    device: str = "cpu"

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise EdgepruneError(msg)

        if self.method not in list_methods():
            bad(f"unknown pruning method {self.method!r}; choose one of: "
                f"{', '.join(list_methods())}")
        if self.stages < 1:
            bad(f"stages must be at least 1, got {self.stages}")
        for t in range(self.stages):
            rs = self.resolutions_at(t)
            if not rs or not all(0 < r <= 1 for r in rs):
                bad(f"resolutions must lie in (0, 1], got {rs}")
            if not self.epsilon_at(t) >= 0:
                bad(f"max error increase must be ≥ 0, got {self.epsilon_at(t)}")
        if self.clustering not in CLUSTERINGS:
            bad(f"unknown clustering {self.clustering!r}; choose one of: {', '.join(CLUSTERINGS)}")
        if self.scaling not in SCALINGS:
            bad(f"unknown MI scaling {self.scaling!r}; choose one of: {', '.join(SCALINGS)}")
        if self.sigma2 is not None and not self.sigma2 > 0:
            bad(f"sigma2 must be positive, got {self.sigma2}")
        if self.target_metric not in TARGET_METRICS:
            bad(f"unknown target metric {self.target_metric!r}; choose one of: "
                f"{', '.join(TARGET_METRICS)}")
        if self.target_reduction is not None and not 0 < self.target_reduction < 1:
            bad(f"target reduction must be a fraction in (0, 1), got {self.target_reduction}")
        if self.samples < 10 or self.finetune_epochs < 0 or self.batch_size < 1:
            bad("samples must be ≥ 10, finetune epochs ≥ 0 and batch size ≥ 1")
        choices = {"variant": VARIANTS, "score": SCORES, "keep": KEEP_RULES,
                   "epsilon_mode": EPSILON_MODES, "objective": OBJECTIVES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad(f"unknown {name.replace('_', ' ')} {getattr(self, name)!r}; choose one of: "
                    f"{', '.join(allowed)}")
        if self.ks is not None and not all(int(k) >= 1 for k in self.ks):
            bad(f"cluster counts must be ≥ 1, got {self.ks}")
        if self.method in ("mint", "mspic+mint"):
            from edgeprune.prune.mint import mint_config

            mint_config(self).validate()
        if self.objective == "latency":
            self.latency_target()  # a name or file that does not load fails here
            from edgeprune.profile.accounting import PRECISION_BITS

            if self.latency_precision not in PRECISION_BITS:
                bad(f"unknown latency precision {self.latency_precision!r}; choose one of: "
                    f"{', '.join(PRECISION_BITS)}")
        if self.stable_clusters < 0 or not 0 < self.stable_fraction <= 1:
            bad(f"stable clusters must be ≥ 0 draws and the stable fraction in (0, 1], got "
                f"{self.stable_clusters} and {self.stable_fraction}")
        if self.score == "mi-shuffle" and self.shuffles < 1:
            bad(f"mi-shuffle needs at least 1 label shuffle, got {self.shuffles}")
        from edgeprune.train import resolve_device

        resolve_device(self.device)  # an absent GPU fails here, before OUT/stages exists

    def latency_target(self):
        """The target of ``objective = latency`` (an error when none is given)."""
        from edgeprune.targets import pick_target

        if not (self.target or self.target_file):
            raise EdgepruneError("--objective latency needs the device whose latency to "
                                 "estimate: pass --target NAME (see `edgeprune targets`) or "
                                 "--target-file PATH")
        return pick_target(self.target, self.target_file)

    def resolved(self) -> PruneConfig:
        """The options in effect: ``variant = paper`` fixes the paper's choices."""
        return replace(self, **PAPER) if self.variant == "paper" else self

    def mi_config(self) -> MIConfig:
        return MIConfig(self.sigma2, self.scaling, score=self.score, shuffles=self.shuffles,
                        shuffle_seed=self.seed)

    def resolutions_at(self, t: int) -> list[float]:
        rs = self.resolutions
        if rs and isinstance(rs[0], (list, tuple)):
            return [float(r) for r in rs[min(t, len(rs) - 1)]]
        return [float(r) for r in rs]

    def epsilon_at(self, t: int) -> float:
        e = self.max_error_increase
        return float(e[min(t, len(e) - 1)] if isinstance(e, (list, tuple)) else e)

    def fingerprint_fields(self) -> dict:
        # Options that do not change what stage t computes may change between runs.
        d = asdict(self)
        for k in ("stages", "resume", "device", "target_reduction", "target_metric"):
            d.pop(k)
        if self.objective != "latency":  # the target only matters to the latency objective
            for k in ("target", "target_file", "latency_precision"):
                d.pop(k)
        return d


@dataclass
class PruneResult:
    loaded: LoadedModel
    summary: dict
    record: dict  # the content of mspic.json
    path: Path    # out_dir/pruned.pt


def prune_model(loaded: LoadedModel, data: Dataset, config: PruneConfig, out_dir: Path,
                progress=None) -> PruneResult:
    """Prune ``loaded`` by ``config`` in stages; write pruned.pt, mspic.json, mspic.png and
    stages/ under ``out_dir``. ``data`` must be normalised as the model was trained
    (:func:`edgeprune.checkpoint.data_for_model`). The input model is not modified."""
    config.validate()
    refuse_exported(loaded.model)
    if config.method in ("mint", "mspic+mint"):  # filters, not only units: edgeprune.prune.mint
        from edgeprune.prune.mint import prune_model_channels

        return prune_model_channels(loaded, data, config, out_dir, progress)
    config = replace(config.resolved(), device=distributed.setup(config.device))
    progress = progress if distributed.is_main() else None
    out_dir = Path(out_dir)
    stages_dir = out_dir / "stages"
    if distributed.is_main():
        stages_dir.mkdir(parents=True, exist_ok=True)
    info = copy.deepcopy(loaded.info)
    shape = tuple(info.input_shape or data.input_shape)
    info.input_shape = shape
    # Any model that is not the zoo's is pruned as its traced graph (edgeprune.graphunits).
    loaded = LoadedModel(prunable(loaded.model, shape), loaded.info)
    original = _original_units(info, loaded)
    fingerprint = _fingerprint(loaded, data, config)
    model = copy.deepcopy(loaded.model).cpu().eval()
    records, model, info = distributed.broadcast_object(  # rank 0's files decide
        _start(stages_dir, fingerprint, config, model, info) if distributed.is_main() else None)
    start = model_complexity(loaded.model.cpu(), shape)
    start_units = len(list_units(loaded.model))
    x_mi, y_mi = mi_sample(data, config)
    original_error = (records[0]["val_error_start"] if records
                      else evaluate(loaded.model, data, "val", device=config.device).error)
    loaded.model.cpu()
    t = len(records)
    while t < config.stages and not (records and _should_stop(records[-1], start, start_units,
                                                                config)):
        record, model, info = _run_stage(t, model, info, data, config, x_mi, y_mi, shape,
                                         progress, original_error)
        if distributed.is_main():
            save_checkpoint(stages_dir / f"stage_{t}.pt", model, info)
            write_json(stages_dir / f"stage_{t}.json", {"fingerprint": fingerprint,
                                                        "record": record,
                                                        "options": config.fingerprint_fields()})
        records.append(record)
        t += 1
    return _finish(model, info, records, original, start, start_units, config, out_dir)


# ---------------------------------------------------------------- one stage


def stage_context(t: int, model, data: Dataset, config: PruneConfig, x_mi, y_mi,
                  original_error: float | None = None, progress=None,
                  input_shape: tuple | None = None) -> StageContext:
    """What a method decides stage ``t`` on (also used by benchmarks/criteria.py)."""
    shape = tuple(input_shape or data.input_shape)
    units = list_units(model)
    base = evaluate(model, data, "val", device=config.device).error
    model.cpu()
    params = config.resolutions_at(t)
    if config.clustering == "kmeans":
        params = [int(k) for k in config.ks] if config.ks else every_k(len(units))
    reference = {"stage": None, "budget": base if original_error is None else original_error,
                 "absolute": 0.0}[config.epsilon_mode]
    scored: dict = {}

    def scores():
        if "scores" not in scored:
            scored["scores"], scored["draws"] = _score(model, units, x_mi, y_mi, config,
                                                       progress, t)
        return scored["scores"]

    def draws():
        scores()
        return scored["draws"]

    return StageContext(
        stage=t, model=model, units=units, base_error=base, epsilon=config.epsilon_at(t),
        parameters=params, clustering=config.clustering, seed=config.seed,
        count=(config.counts[min(t, len(config.counts) - 1)] if config.counts else None),
        score_fn=scores, draws_fn=draws if config.stable_clusters else None,
        stable_fraction=config.stable_fraction,
        error_fn=lambda removed: gated_val_error(model, units, removed, data),
        on_policy=_bar(progress, f"stage {t + 1}: policies", len(params)),
        keep=config.keep, reference_error=reference, objective=config.objective,
        costs_fn=lambda: unit_costs(model, shape, units, config))


@dataclass(frozen=True)
class UnitCost:
    """What removing one unit saves: parameters, MACs and (objective latency) estimated ms."""

    params: int
    macs: int
    latency: float | None = None


def unit_costs(model, shape, units, config: PruneConfig) -> list[UnitCost]:
    """Per-unit savings in the order of ``units``; latency only for ``objective = latency``
    (one ONNX export and estimate of the model, :mod:`edgeprune.prune.latency`)."""
    cx = unit_complexity(model, shape, units)
    if config.objective != "latency":
        return [UnitCost(c.params, c.macs) for c in cx]
    from edgeprune.prune.latency import unit_latency

    lat = unit_latency(model, shape, units, config.latency_target(), config.latency_precision,
                       [c.macs for c in cx])
    return [UnitCost(c.params, c.macs, ms) for c, ms in zip(cx, lat.units_ms)]


def _run_stage(t, model, info, data, config, x_mi, y_mi, shape, progress, original_error):
    before = model_complexity(model, shape)
    ctx = stage_context(t, model, data, config, x_mi, y_mi, original_error, progress, shape)
    units, base = ctx.units, ctx.base_error
    # every rank runs the method (its MI capture is sharded), rank 0's choice is applied
    sel = distributed.broadcast_object(get_method(config.method)(ctx))
    names = [units[i].name for i in sel.removed]
    record = {
        "stage": t, "units_before": len(units), "val_error_start": base,
        "epsilon": ctx.epsilon, "epsilon_reference": ctx.reference, "scores": sel.scores,
        "score_kind": sel.score_kind,
        "policies": sel.policies, "chosen": sel.chosen, "removed": names,
        "gated_val_error": sel.gated_error,
        "params_before": before.params, "macs_before": before.macs,
    }
    if ctx.draws_fn is not None and ctx._draws:
        record["bootstrap"] = {"draws": len(ctx._draws), "stable_fraction": ctx.stable_fraction,
                               "score_sd": {u.name: _sd([d[i] for d in ctx._draws])
                                            for i, u in enumerate(units)}}
    if config.objective == "latency" and ctx._costs is not None:
        record["unit_latency_ms"] = {u.name: c.latency for u, c in zip(units, ctx._costs)}
    if names:
        remove_units(model, names)
        info.removed_units = [*info.removed_units, *names]
        record["val_error_removed"] = evaluate(model, data, "val").error
        record["finetune_losses"] = _finetune(model, data, config, t, progress)
    after = model_complexity(model, shape)
    record.update(units_after=len(list_units(model)), params_after=after.params,
                  macs_after=after.macs,
                  val_error_finetuned=evaluate(model, data, "val", device=config.device).error)
    model.cpu().eval()
    return record, model, info


def _score(model, units, x, y, config, progress, t):
    """The units' scores, and their scores on the bootstrap draws ([] without stable
    clusters)."""
    advance = _bar(progress, f"stage {t + 1}: MI", len(units))
    on_unit = (lambda i, v: advance()) if advance else None
    if not config.stable_clusters:
        return unit_information(model, x, y, range(len(units)), config.mi_config(),
                                on_unit=on_unit), []
    return unit_information_bootstrap(model, x, y, range(len(units)), config.mi_config(),
                                      draws=config.stable_clusters,
                                      seed=config.seed * 1009 + t, on_unit=on_unit)


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _finetune(model, data, config, t, progress) -> list[float]:
    if config.finetune_epochs == 0:
        return []
    cfg = TrainConfig(epochs=config.finetune_epochs, batch_size=config.batch_size, lr=config.lr,
                      seed=config.seed * 1009 + t, device=config.device)
    update = None
    if progress is not None:
        task = progress.add_task(f"stage {t + 1}: fine-tune", total=config.finetune_epochs,
                                 info="")

        def update(epoch, epochs, batch, batches, loss):
            progress.update(task, completed=epoch + batch / batches, info=f"loss {loss:.3f}")
    losses = train(model, data, cfg, update)
    model.cpu()
    return losses


def _bar(progress, description: str, total: int):
    """A callable that advances a new progress bar by one, or None without progress."""
    if progress is None:
        return None
    task = progress.add_task(description, total=total, info="")
    return lambda: progress.advance(task)


def mi_sample(data: Dataset, config: PruneConfig) -> tuple[torch.Tensor, torch.Tensor]:
    s = data.sample("train", config.samples, seed=config.seed)
    return torch.from_numpy(data.normalize(s.x)), torch.from_numpy(s.y.astype("int64"))


def _should_stop(last: dict, start, start_units: int, config: PruneConfig) -> bool:
    if not last["removed"]:
        return not _later_stage_may_remove(last["stage"], config)
    if config.target_reduction is None:
        return False
    now = {"units": last["units_after"], "params": last["params_after"],
           "macs": last["macs_after"]}[config.target_metric]
    was = {"units": start_units, "params": start.params, "macs": start.macs}[config.target_metric]
    return 1 - now / was >= config.target_reduction - 1e-12


def _later_stage_may_remove(t: int, config: PruneConfig) -> bool:
    """After a stage that removed nothing the model is unchanged, so a later stage can only
    remove something with a larger ε or resolutions the stage did not try (as the paper's loop
    runs all N stages with their own ε^t and R^t)."""
    tried = set(config.resolutions_at(t))
    return any(config.epsilon_at(u) > config.epsilon_at(t) + 1e-12
               or not set(config.resolutions_at(u)) <= tried
               for u in range(t + 1, config.stages))


# ---------------------------------------------------------------- resume


def _fingerprint(loaded: LoadedModel, data: Dataset, config: PruneConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"config": config.fingerprint_fields(), "data": data.spec,
                         "n_train": len(data.train), "removed": loaded.info.removed_units},
                        sort_keys=True, default=str).encode())
    for k, v in sorted(loaded.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def _resume(stages_dir: Path, fingerprint: str, config: PruneConfig) -> list[dict]:
    records = []
    while True:
        t = len(records)
        js, pt = stages_dir / f"stage_{t}.json", stages_dir / f"stage_{t}.pt"
        if not (js.is_file() and pt.is_file()):
            return records
        saved = json.loads(js.read_text())
        if saved.get("fingerprint") != fingerprint:
            _refuse_resume(stages_dir, saved, config)
        records.append(saved["record"])


def _refuse_resume(stages_dir: Path, saved: dict, config: PruneConfig) -> None:
    """A resume whose stages do not apply must not silently start over: say what differs."""
    old = saved.get("options") or {}
    new = json.loads(json.dumps(config.fingerprint_fields(), default=str))
    differing = [k for k in new if k in old and old[k] != new[k]]
    what = (", ".join(f"--{k.replace('_', '-')} (was {old[k]!r}, now {new[k]!r})"
                      for k in differing) if differing else "the input model or data")
    raise EdgepruneError(f"cannot resume from {stages_dir}: {what} differ from the finished "
                         "stages; rerun with the same options, or without --resume to start over")


def _start(stages_dir: Path, fingerprint: str, config: PruneConfig, model, info):
    """The finished stages' records and the model and info to continue from."""
    records = _resume(stages_dir, fingerprint, config) if config.resume else []
    if records:
        model, info = _load_stage(stages_dir, len(records) - 1, info)
    else:
        _clear_stages(stages_dir)
    return records, model, info


def _load_stage(stages_dir: Path, t: int, info: ModelInfo):
    loaded = load_model(stages_dir / f"stage_{t}.pt")
    return loaded.model.eval(), loaded.info


def _clear_stages(stages_dir: Path) -> None:
    for p in stages_dir.glob("stage_*"):
        p.unlink()


# ---------------------------------------------------------------- results


def _original_units(info: ModelInfo, loaded: LoadedModel) -> list[dict]:
    """The units of the unpruned architecture (their names and indices stay valid throughout)."""
    fresh = (prunable(build_arch(info), info.input_shape) if info.removed_units
             else loaded.model)  # without removals the model is the original architecture
    return [{"index": u.index, "name": u.name, "kind": u.kind, "stage": u.stage}
            for u in list_units(fresh)]


def _finish(model, info, records, original, start, start_units, config, out_dir) -> PruneResult:
    if not distributed.is_main():  # the other ranks hold the same model and write nothing
        return PruneResult(LoadedModel(model.eval(), info), {}, {}, out_dir / "pruned.pt")
    pruned_path = save_checkpoint(out_dir / "pruned.pt", model, info)
    from edgeprune.pt2 import write_beside

    write_beside(pruned_path, model, info)  # pruned.pt2: loads without the class or unpickling
    last = records[-1]
    acc_before = 1 - records[0]["val_error_start"]
    acc_after = 1 - last["val_error_finetuned"]
    summary = {
        "method": config.method, "stages": sum(1 for r in records if r["removed"]),
        "stages_run": len(records),
        "units_before": start_units, "units_after": last["units_after"],
        "params_before": start.params, "params_after": last["params_after"],
        "macs_before": start.macs, "macs_after": last["macs_after"],
        "val_accuracy_before": acc_before, "val_accuracy_after": acc_after,
        "removed_units": list(info.removed_units),
        "file_size_bytes": pruned_path.stat().st_size,
    }
    record = {"method": config.method, "config": asdict(config), "units": original,
              "stages": records, "summary": summary}
    write_json(out_dir / "mspic.json", record)
    from edgeprune.prune.plot import plot_stages

    plot_stages(record, out_dir / "mspic.png")
    return PruneResult(LoadedModel(model.eval(), info), summary, record, pruned_path)

