"""The pipeline: ``edgeprune build``, ``quantize`` and ``profile`` all run these stages.

    load → prune → export → quantize → check → engine → profile → report

Each stage is a function of the context (the config, the target, the build directory and the
typed results of the stages before it) to its own typed result; what it decided is recorded in
``build-state.json``, from which a stage result is read back as the same dataclass. A command
picks which stages run (``stages``), and ``stop_after`` ends a run early. ``resume=True``
continues an interrupted build from its first unfinished stage, but only with the same options,
the same model file content and the same data (all three are fingerprinted), and refuses naming
what differs. Decisions are made once: the precision in ``load`` (against the target), the
TensorRT compatibility in ``check`` (the engine plan takes that report).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from edgeprune import __version__
from edgeprune.atomic import write_json
from edgeprune.builddir import BuildDir
from edgeprune.compat import CompatReport
from edgeprune.errors import EdgepruneError
from edgeprune.precision import Resolution

METHODS = ("mspic", "random", "l1", "cost", "mint", "mspic+mint", "none")
STATE_FILE = BuildDir.STATE


@dataclass
class EngineOptions:
    """The ``[engine]`` options of a build."""

    dla_core: int | None = None


@dataclass
class BuildConfig:
    """Everything ``edgeprune build`` was asked to do. ``prune``, ``quantize`` and ``engine``
    hold overrides of those stages' own configs (field name -> value). ``trust_model`` comes
    from the command line only, never from a config file (see FILE_KEYS)."""

    target: str | None
    model: Path
    target_file: Path | None = None
    data: str | None = None
    out: Path = Path("out")
    precision: str = "auto"
    method: str = "mspic"
    allow_emulated: bool = False
    trust_model: bool = False
    arch: str | None = None          # the architecture of a plain state_dict (--arch …)
    num_classes: int | None = None
    input_size: str | None = None
    mean: list[float] | None = None  # --mean/--std: for a model file that stores none
    std: list[float] | None = None
    # an earlier build directory of the same model, data and pruning options: its pruned
    # checkpoint is taken instead of pruning again (build --target A,B prunes once)
    reuse_pruning: Path | None = None
    seed: int = 0
    measure_host: bool = True
    fps: float = 30.0
    prune: dict = field(default_factory=dict)
    quantize: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)

    def options(self) -> dict:
        """What changes the build's results, as plain JSON values (the resume fingerprint)."""
        d = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        for k in ("out", "model", "trust_model", "measure_host"):
            d.pop(k)
        return d

    def validate(self) -> None:
        """Every check that needs no file: types, names and ranges. Raises one-line errors."""
        from edgeprune import normalization
        from edgeprune.config import check_range, check_type, field_types
        from edgeprune.precision import AUTO, get_precision

        self.mean, self.std = normalization.parse_pair(self.mean, self.std)
        types = field_types(BuildConfig)
        for f in fields(self):
            check_type(getattr(self, f.name), types[f.name], f.name)
        if self.method not in METHODS:
            raise EdgepruneError(f"unknown pruning method {self.method!r}; choose one of: "
                                 f"{', '.join(METHODS)}")
        if self.precision != AUTO:
            get_precision(self.precision)
        check_range("seed", self.seed, "seed")
        check_range("fps", self.fps, "fps")
        self.arch_spec()
        self.prune_config()
        self.quantize_config()
        self.engine_options()

    def arch_spec(self):
        from edgeprune.checkpoint import arch_spec

        return arch_spec(self.arch, self.num_classes, self.input_size)

    def prune_config(self, precision: str | None = None):
        """The prune stage's options; ``objective = latency`` estimates on the build's target
        at ``precision`` (the resolved one; fp32 until it is known) unless [prune] names one."""
        from edgeprune.config import checked_overrides
        from edgeprune.prune import PruneConfig

        config = checked_overrides(PruneConfig(), self.prune, "[prune]")
        target = {"target": self.target,
                  "target_file": str(self.target_file) if self.target_file else None}
        if precision and "latency_precision" not in self.prune:
            target["latency_precision"] = precision
        config = checked_overrides(config, {"method": self.method if self.method != "none"
                                            else "mspic", "seed": self.seed, "resume": True,
                                            **target}, "")
        config.validate()
        return config

    def quantize_config(self):
        from edgeprune.config import checked_overrides
        from edgeprune.quantize import QuantizeConfig

        config = checked_overrides(QuantizeConfig(seed=self.seed), self.quantize, "[quantize]")
        _check_quantize(config)
        return config

    def engine_options(self) -> EngineOptions:
        from edgeprune.config import checked_overrides

        return checked_overrides(EngineOptions(), self.engine, "[engine]")


def _check_quantize(config) -> None:
    """Names in the quantize options that would only fail at the quantize stage, checked now."""
    from edgeprune.quantize.calibration import METHODS, check_calibration_spec, load_recipe
    from edgeprune.quantize.int8 import FLAVOURS

    if config.int8_flavour != "auto" and config.int8_flavour not in FLAVOURS:
        raise EdgepruneError(f"unknown int8 flavour {config.int8_flavour!r}; choose one of: "
                             f"auto, {', '.join(FLAVOURS)}")
    if config.calibration_method is not None and config.calibration_method not in METHODS:
        raise EdgepruneError(f"unknown calibration method {config.calibration_method!r}; choose "
                             f"one of: {', '.join(METHODS)}")
    if config.calibration_data is not None:
        check_calibration_spec(config.calibration_data)
    if config.recipe is not None:
        load_recipe(config.recipe).with_overrides(
            samples=config.calibration_samples, method=config.calibration_method,
            percentile=config.percentile)


# Top-level keys a config file may set: never trust_model (unpickling runs code), never model.
FILE_KEYS = ("target", "target_file", "data", "out", "precision", "method", "allow_emulated",
             "seed", "measure_host", "fps", "mean", "std")
FILE_TABLES = ("prune", "quantize", "engine")


# ---------------------------------------------------------------- stage results


@dataclass
class Loaded:
    arch: str
    input_shape: list[int]
    params: int
    macs: int
    accuracy: float | None
    resolution: Resolution

    @property
    def precision(self) -> str:
        return self.resolution.precision


@dataclass
class Pruned:
    method: str
    checkpoint: str | None  # the pruned checkpoint in the build directory; None: not pruned
    summary: dict | None


@dataclass
class Exported:
    original_onnx: str
    original: dict            # the export report
    pruned_onnx: str | None = None
    pruned: dict | None = None
    pruned_accuracy: float | None = None

    @property
    def model_onnx(self) -> str:
        """The fp32 graph later stages build from."""
        return self.pruned_onnx or self.original_onnx


@dataclass
class Quantized:
    precision: str
    onnx: str
    flavour: str | None = None
    accuracy: float | None = None
    fp32_accuracy: float | None = None
    calibration_cache: str | None = None
    summary: dict | None = None
    # the unpruned original at the same precision (fp16, int8 of a pruned build), so that the
    # report tells pruning's effect from quantization's: onnx, accuracy, flavour
    original: dict | None = None


@dataclass
class Checked:
    skipped: str | None = None
    onnx: str | None = None
    engine_precision: str | None = None
    report: CompatReport | None = None


@dataclass
class EnginePlan:
    skipped: str | None = None
    kind: str | None = None   # engine | script
    path: str | None = None
    plan: dict | None = None


@dataclass
class Profiled:
    variants: list[dict]


@dataclass
class Reported:
    files: list[str]


RESULT_TYPES = {"load": Loaded, "prune": Pruned, "export": Exported, "quantize": Quantized,
                "check": Checked, "engine": EnginePlan, "profile": Profiled, "report": Reported}
_NESTED = {(Loaded, "resolution"): Resolution, (Checked, "report"): CompatReport}


def result_to_dict(result) -> dict:
    return asdict(result)


def result_from_dict(stage: str, d: dict):
    cls = RESULT_TYPES[stage]
    kwargs = {}
    for f in fields(cls):
        if f.name not in d and f.default is not MISSING:  # a field newer than the state file
            kwargs[f.name] = f.default
            continue
        value = d[f.name]
        nested = _NESTED.get((cls, f.name))
        kwargs[f.name] = nested.from_dict(value) if nested and value is not None else value
    return cls(**kwargs)


# ---------------------------------------------------------------- state


@dataclass
class BuildState:
    fingerprint: dict
    target: str
    done: list[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)  # stage name -> its result dataclass

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "target": self.target, "done": self.done,
                "results": {k: result_to_dict(v) for k, v in self.results.items()}}

    @classmethod
    def read(cls, path: Path) -> BuildState:
        """The state of an earlier run; a damaged file is a one-line error."""
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(d["fingerprint"], d["target"], list(d["done"]),
                       {k: result_from_dict(k, v) for k, v in d["results"].items()})
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise EdgepruneError(f"{path} is damaged; rerun the build without --resume to start "
                                 "over") from None


@dataclass
class Context:
    """What the stages share: the config, the target, the build directory, the results."""

    cfg: BuildConfig
    out: BuildDir
    target: object
    log: Callable[[str], None]
    state: BuildState
    progress: object = None  # a rich Progress shared by the stages, or None
    describe: dict = field(default_factory=dict)  # profile: name, precision, engine, batch
    _cache: dict = field(default_factory=dict)

    def result(self, stage: str):
        return self.state.results.get(stage)

    def original(self):
        if "original" not in self._cache:
            from edgeprune.checkpoint import load_model
            from edgeprune.normalization import apply_to_model

            loaded = load_model(self.cfg.model, trust_model=self.cfg.trust_model,
                                arch=self.cfg.arch_spec())
            apply_to_model(loaded, self.cfg.mean, self.cfg.std)
            self._cache["original"] = loaded
        return self._cache["original"]

    def pruned(self):
        """The model later stages take: the pruned checkpoint, or the original when not pruned."""
        pruned = self.result("prune")
        if pruned is None or pruned.checkpoint is None:
            return self.original()
        from edgeprune.checkpoint import load_model

        return load_model(self.out.resolve(pruned.checkpoint))

    def data(self):
        """The data set, checked against the model and normalised as it was trained."""
        if "data" not in self._cache:
            if not self.cfg.data:
                return None
            from edgeprune.checkpoint import data_for_model
            from edgeprune.data import load_dataset

            self._cache["data"] = data_for_model(self.original(), load_dataset(self.cfg.data))
        return self._cache["data"]

    def save(self) -> None:
        write_json(self.out.state, self.state.to_dict())


# ---------------------------------------------------------------- stages


def stage_load(ctx: Context) -> Loaded:
    from edgeprune.complexity import model_complexity
    from edgeprune.train import evaluate

    cfg = ctx.cfg
    loaded = ctx.original()
    data = ctx.data()
    if data is None and cfg.method != "none":
        raise EdgepruneError(f"--method {cfg.method} needs data: pass --data SPEC (or --method "
                             "none)")
    if loaded.info.input_shape is None:
        raise EdgepruneError(f"{cfg.model} does not record its input shape; pass --data so "
                             "edgeprune can take it from the data set")
    resolution = _resolve(ctx, loaded, data is not None or _calibrates_without_data(cfg))
    size = model_complexity(loaded.model, tuple(loaded.info.input_shape))
    acc = evaluate(loaded.model, data, "test").accuracy if data is not None else None
    ctx.log(f"loaded {loaded.info.arch}: {size.params:,} params, {size.macs:,} MACs"
            + (f", test accuracy {acc:.2%}" if acc is not None else ""))
    ctx.log(f"precision {resolution.precision}: {resolution.reason}")
    return Loaded(loaded.info.arch, list(loaded.info.input_shape), size.params, size.macs, acc,
                  resolution)


def _calibrates_without_data(cfg: BuildConfig) -> bool:
    from edgeprune.quantize.calibration import calibrates_without_data

    return calibrates_without_data(cfg.precision, cfg.quantize.get("calibration_data"))


def _resolve(ctx: Context, loaded, has_data: bool) -> Resolution:
    """The build's precision, decided here once. ``auto`` exports the model to a scratch file
    and asks the target's latency estimate about each precision the target runs."""
    from edgeprune.precision import estimate_precisions, resolve_precision

    cfg = ctx.cfg
    if ctx.describe:  # profile: the precision the model runs at, as given; not a build choice
        return Resolution(cfg.precision, cfg.precision, ctx.target.name, reason="as given")

    def estimate(candidates: list[str]) -> dict:
        from edgeprune.export import export_onnx

        ctx.out.work.mkdir(parents=True, exist_ok=True)
        scratch = ctx.out.work / "auto.onnx"
        export_onnx(loaded.model, tuple(loaded.info.input_shape), scratch)
        try:
            return estimate_precisions(scratch, ctx.target, candidates, ctx.out.work)
        finally:
            scratch.unlink(missing_ok=True)

    return resolve_precision(ctx.target, cfg.precision, allow_emulated=cfg.allow_emulated,
                             has_data=has_data, estimate=estimate)


def stage_prune(ctx: Context) -> Pruned:
    if ctx.cfg.method == "none":
        ctx.log("pruning skipped (--method none): later stages take the model as it is")
        return Pruned("none", None, None)
    if ctx.cfg.reuse_pruning is not None:
        return _reuse_pruning(ctx)
    from edgeprune.prune import prune_model

    config = ctx.cfg.prune_config(ctx.result("load").precision)
    result = prune_model(ctx.original(), ctx.data(), config, ctx.out.root,
                         progress=ctx.progress)
    s = {**result.summary, "stage_log": [
        {"stage": r["stage"] + 1, "units": f"{r['units_before']} → {r['units_after']}",
         "removed": len(r["removed"]), "params_after": r["params_after"],
         "val_error_start": round(r["val_error_start"], 4),
         "val_error_finetuned": round(r["val_error_finetuned"], 4)}
        for r in result.record["stages"]],
        # which units went, and in which stage: what a reader of the report asks first
        "removed_units": [{"unit": name, "stage": r["stage"] + 1}
                          for r in result.record["stages"] for name in r["removed"]]}
    from edgeprune import distributed

    distributed.finish()  # the other ranks' part of a torchrun build ends here
    ctx.log(f"pruned with {s['method']}: {s['units_before']} → {s['units_after']} units, "
            f"{s['params_before']:,} → {s['params_after']:,} params")
    return Pruned(ctx.cfg.method, ctx.out.rel(result.path), s)


# What must be equal for an earlier build's pruning to be this build's: the pruning depends on
# the model, the data and these options, never on the target or the precision.
PRUNING_OPTIONS = ("method", "prune", "seed", "data", "arch", "num_classes", "input_size",
                   "mean", "std")


def reused_pruning(cfg: BuildConfig) -> BuildState:
    """The state of the build in ``cfg.reuse_pruning``, checked to have pruned this model with
    these options (the data is compared when it is loaded, :func:`_reuse_pruning`)."""
    src = BuildDir(cfg.reuse_pruning)
    flag = f"--reuse-pruning {src.root}"
    if not src.state.is_file():
        raise EdgepruneError(f"{flag}: no {BuildDir.STATE} there; give the directory of an "
                             "earlier `edgeprune build` that pruned")
    state = BuildState.read(src.state)
    pruned = state.results.get("prune")
    if "prune" not in state.done or pruned is None or pruned.checkpoint is None:
        raise EdgepruneError(f"{flag}: that build did not prune (or did not finish pruning)")
    old, new = state.fingerprint.get("options", {}), cfg.options()
    for key in PRUNING_OPTIONS:
        if old.get(key) != new.get(key):
            raise EdgepruneError(f"{flag}: that build pruned with {key} = {old.get(key)!r}, this "
                                 f"one asks for {new.get(key)!r}; prune again (leave "
                                 "--reuse-pruning out)")
    if state.fingerprint.get("model") != _file_hash(cfg.model):
        raise EdgepruneError(f"{flag}: that build pruned another model file (or this one "
                             "changed since)")
    if not src.resolve(pruned.checkpoint).is_file():
        raise EdgepruneError(f"{flag}: its pruned checkpoint {pruned.checkpoint} is missing")
    return state


def _reuse_pruning(ctx: Context) -> Pruned:
    """The earlier build's pruned checkpoint (and its .pt2), MI record and plot, copied in: no
    pruning again."""
    import shutil

    state = reused_pruning(ctx.cfg)
    src = BuildDir(ctx.cfg.reuse_pruning)
    if ctx.data() is not None and state.fingerprint.get("data") != data_hash(ctx.data()):
        raise EdgepruneError(f"--reuse-pruning {src.root}: that build pruned on other data; "
                             "prune again (leave --reuse-pruning out)")
    pruned = state.results["prune"]
    shutil.copyfile(src.resolve(pruned.checkpoint), ctx.out / BuildDir.PRUNED)
    for name in (BuildDir.PRUNED_PT2, BuildDir.MSPIC_JSON, BuildDir.MSPIC_PNG):
        if (src / name).is_file():
            shutil.copyfile(src / name, ctx.out / name)
    ctx.log(f"pruning reused from {src.root} (same model, data and options): "
            f"{BuildDir.PRUNED} copied, not pruned again")
    summary = dict(pruned.summary or {}, reused_from=str(src.root))
    return Pruned(pruned.method, BuildDir.PRUNED, summary)


def stage_export(ctx: Context) -> Exported:
    """The original model, and the pruned one when there is one (a model not pruned is exported
    once, as model.onnx)."""
    from edgeprune.export import export_onnx

    _export_testset(ctx)
    shape = tuple(ctx.result("load").input_shape)
    pruned = ctx.result("prune")
    if pruned is None or pruned.checkpoint is None:
        rep = export_onnx(ctx.original().model, shape, ctx.out / BuildDir.MODEL_ONNX)
        ctx.log(f"exported {BuildDir.MODEL_ONNX} (opset {rep.opset}, {rep.nodes} nodes, "
                f"max |ORT − PyTorch| = {rep.max_abs_diff:.1e})")
        return Exported(BuildDir.MODEL_ONNX, rep.to_dict())
    original = export_onnx(ctx.original().model, shape, ctx.out / BuildDir.ORIGINAL_ONNX)
    model = ctx.pruned().model
    rep = export_onnx(model, shape, ctx.out / BuildDir.MODEL_ONNX)
    ctx.log(f"exported {BuildDir.MODEL_ONNX} (opset {rep.opset}, {rep.nodes} nodes, "
            f"max |ORT − PyTorch| = {rep.max_abs_diff:.1e})")
    acc = None
    if ctx.data() is not None:
        from edgeprune.train import evaluate

        acc = evaluate(model, ctx.data(), "test").accuracy
    return Exported(BuildDir.ORIGINAL_ONNX, original.to_dict(), BuildDir.MODEL_ONNX,
                    rep.to_dict(), acc)


def _export_testset(ctx: Context) -> None:
    """The test split as the device's engine-accuracy run reads it (no torch, no data spec)."""
    if ctx.data() is None:
        return
    from edgeprune.engine.accuracy import export_testset

    export_testset(ctx.data(), ctx.out / BuildDir.TESTSET)
    ctx.log(f"exported the test split for the device: {BuildDir.TESTSET}")


def stage_quantize(ctx: Context) -> Quantized:
    precision = ctx.result("load").precision
    fp32 = ctx.result("export").model_onnx
    if precision == "fp32":
        return Quantized("fp32", fp32)
    from edgeprune.quantize import quantize_model

    result = quantize_model(ctx.pruned(), ctx.out / fp32, ctx.data(), precision, ctx.target,
                            ctx.out.root, ctx.cfg.quantize_config(), progress=ctx.progress)
    acc = f", accuracy {result.accuracy:.2%}" if result.accuracy is not None else ""
    ctx.log(f"quantized to {precision}" + (f" ({result.flavour})" if result.flavour else "")
            + f": {Path(result.onnx_path).name}{acc}")
    return Quantized(precision, ctx.out.rel(result.onnx_path), result.flavour, result.accuracy,
                     result.fp32_accuracy,
                     ctx.out.rel(result.calibration_cache) if result.calibration_cache else None,
                     result.summary, _original_quantized(ctx, precision))


# Precisions made without training: the original at them costs one more calibration (int8) or
# conversion (fp16). binary and shared fine-tune, which would double the build; they go without.
ORIGINAL_AT_PRECISION = ("fp16", "int8")


def _original_quantized(ctx: Context, precision: str) -> dict | None:
    """The unpruned original at the build's precision, into original-quantized/: with it the
    report holds all four of original/pruned × fp32/precision, and pruning's effect on accuracy
    and cost can be told apart from quantization's."""
    pruned = ctx.result("prune")
    if pruned is None or pruned.checkpoint is None or precision not in ORIGINAL_AT_PRECISION:
        return None
    from edgeprune.quantize import quantize_model

    result = quantize_model(ctx.original(), ctx.out / ctx.result("export").original_onnx,
                            ctx.data(), precision, ctx.target,
                            ctx.out / BuildDir.ORIGINAL_QUANTIZED, ctx.cfg.quantize_config(),
                            progress=ctx.progress)
    acc = f", accuracy {result.accuracy:.2%}" if result.accuracy is not None else ""
    ctx.log(f"quantized the original to {precision} too (for comparison){acc}")
    return {"onnx": ctx.out.rel(result.onnx_path), "accuracy": result.accuracy,
            "flavour": result.flavour, "fp32_accuracy": result.fp32_accuracy}


def _engine_input(ctx: Context) -> tuple[str, str]:
    """The ONNX the engine is built from, and the precision it is built at: TensorRT takes fp16
    as a builder flag on the fp32 graph, int8 from the QDQ graph; binary runs on float kernels."""
    from edgeprune.precision import get_precision

    q = ctx.result("quantize")
    spec = get_precision(q.precision)
    onnx = ctx.result("export").model_onnx if spec.name == "fp16" else q.onnx
    return onnx, spec.engine_precision(ctx.target)


def stage_check(ctx: Context) -> Checked:
    if ctx.target.runtime != "tensorrt":
        return Checked(skipped=f"{ctx.target.name} runs ONNX Runtime, not TensorRT")
    from edgeprune.compat import check_onnx

    onnx_name, precision = _engine_input(ctx)
    report = check_onnx(ctx.out / onnx_name, ctx.target, precision)
    ctx.log(f"TensorRT {report.tensorrt} compatibility: {onnx_name} passes")
    return Checked(None, onnx_name, precision, report)


def stage_engine(ctx: Context) -> EnginePlan:
    check = ctx.result("check")
    if check.skipped:
        return EnginePlan(skipped=f"{ctx.target.name} runs ONNX Runtime: no engine to build")
    from edgeprune.engine import make_engine

    cache = ctx.result("quantize").calibration_cache
    result = make_engine(ctx.out / check.onnx, ctx.target, check.engine_precision,
                         ctx.out.engine, calib_cache=ctx.out / cache if cache else None,
                         dla_core=ctx.cfg.engine_options().dla_core, compat=check.report)
    where = "engine" if result.kind == "engine" else "build script for the device"
    ctx.log(f"wrote the {where}: {ctx.out.rel(result.path)}")
    return EnginePlan(None, result.kind, ctx.out.rel(result.path), result.plan)


@dataclass
class Variant:
    name: str
    precision: str
    onnx: Path
    accuracy: float | None = None
    params: int | None = None


def variants(ctx: Context) -> list[Variant]:
    """What the report compares: the original, the original at the build's precision (fp16 or
    int8 of a pruned build), the pruned model if any, and the model at the build's precision if
    it is not fp32; named for what they are. The last one is what the engine runs."""
    if ctx.describe:
        return [_described(ctx)]
    load, pruned, exported = ctx.result("load"), ctx.result("prune"), ctx.result("export")
    q = ctx.result("quantize")
    out = [Variant("original", "fp32", ctx.out / exported.original_onnx, load.accuracy)]
    if q is not None and q.original:  # the original at the build's precision
        acc = q.original.get("accuracy")
        out.append(Variant(f"original-{q.precision}", q.precision,
                           ctx.out.resolve(q.original["onnx"]),
                           acc if acc is not None else load.accuracy))
    base, base_acc = "original", load.accuracy
    if pruned is not None and pruned.checkpoint is not None:
        out.append(Variant("pruned", "fp32", ctx.out / exported.pruned_onnx,
                           exported.pruned_accuracy))
        base = "pruned"
    if q is not None and q.precision != "fp32":
        out.append(Variant(f"{base}-{q.precision}", q.precision, ctx.out.resolve(q.onnx),
                           q.accuracy if q.accuracy is not None else base_acc))
    return out


def _described(ctx: Context) -> Variant:
    """``edgeprune profile``: the one artifact it was given."""
    d = ctx.describe
    load, exported = ctx.result("load"), ctx.result("export")
    onnx = ctx.out / exported.model_onnx if exported else Path(d["onnx"])
    return Variant(d["name"], d["precision"] or load.precision, onnx,
                   d.get("accuracy", load.accuracy if load else None),
                   load.params if load else None)


def stage_profile(ctx: Context) -> Profiled:
    from edgeprune.profile import profile_variant

    rows = []
    for v in variants(ctx):
        rows.append(profile_variant(v.onnx, ctx.target, name=v.name, precision=v.precision,
                                    accuracy=v.accuracy, params=v.params,
                                    measure_host=ctx.cfg.measure_host, fps=ctx.cfg.fps,
                                    batch=ctx.describe.get("batch", 1),
                                    engine_profile=ctx.describe.get("engine_profile")))
        ctx.log(f"profiled {v.name} ({v.precision})")
    return Profiled(rows)


def build_report(ctx: Context) -> dict:
    """report.json, one shape for every command that writes one."""
    target, load = ctx.target, ctx.result("load")
    pruned, q, engine = ctx.result("prune"), ctx.result("quantize"), ctx.result("engine")
    report = {
        "target": {"name": target.name, "display_name": target.display_name,
                   "runtime": target.runtime, **{k: target.section(k) for k in
                                                 ("gpu", "cpu", "software") if target.section(k)}},
        "edgeprune_version": __version__,
        "model": _model_info(ctx),
        "variants": ctx.result("profile").variants,
        "pruning": pruned.summary if pruned else None,
        "fps": ctx.cfg.fps,
    }
    if load is not None and not ctx.describe:
        report["precision"] = load.precision
        report["precision_choice"] = load.resolution.to_dict()
    if q is not None and q.summary is not None:
        report["quantization"] = q.summary
    if engine is not None:
        report["engine"] = {k: v for k, v in asdict(engine).items() if k != "plan"}
    plot = ctx.out / BuildDir.MSPIC_PNG
    # Only this run's plot: a plot left by an earlier run in the directory is not this model's.
    if pruned is not None and pruned.checkpoint is not None and plot.is_file():
        report["mi_plot"] = BuildDir.MSPIC_PNG
    return report


def _model_info(ctx: Context) -> dict:
    load = ctx.result("load")
    if load is None:
        return {"path": str(ctx.describe.get("onnx", ctx.cfg.model))}
    info = {"path": str(ctx.cfg.model), "arch": load.arch, "input_shape": load.input_shape}
    data = ctx.data() if ctx.cfg.data else None
    if data is not None:  # where the mean/std the images were normalized with came from
        info["normalization"] = {"mean": list(data.mean), "std": list(data.std),
                                 "source": data.extra.get("normalization_source")}
    elif not ctx.describe and ctx.original().info.mean is not None:  # calib:DIR, no --data
        m = ctx.original().info
        info["normalization"] = {"mean": list(m.mean), "std": list(m.std),
                                 "source": m.normalization_source}
    if ctx.describe:
        original = ctx.original().info
        info.update(num_classes=original.num_classes, removed_units=original.removed_units,
                    normalization=({"mean": list(original.mean), "std": list(original.std),
                                    "source": original.normalization_source}
                                   if original.mean is not None else info.get("normalization")))
    return info


def stage_report(ctx: Context) -> Reported:
    from edgeprune.report import write_reports

    write_reports(build_report(ctx), ctx.out.root)
    ctx.log(f"wrote report.json, report.md and report.html in {ctx.out.root}")
    return Reported(list(BuildDir.REPORTS))


STAGES: list[tuple[str, Callable[[Context], object]]] = [
    ("load", stage_load), ("prune", stage_prune), ("export", stage_export),
    ("quantize", stage_quantize), ("check", stage_check), ("engine", stage_engine),
    ("profile", stage_profile), ("report", stage_report),
]
STAGE_NAMES = [name for name, _ in STAGES]


# ---------------------------------------------------------------- driver


def prepare(cfg: BuildConfig):
    """Every check that can fail before any work: the config, the target, the precision
    against the target, the model file, the output directory. Returns the target."""
    from edgeprune.precision import check_precision, get_precision
    from edgeprune.targets import pick_target

    cfg.validate()
    target = pick_target(cfg.target, cfg.target_file)
    if cfg.precision != "auto":
        check_precision(target, cfg.precision, allow_emulated=cfg.allow_emulated)
        if get_precision(cfg.precision).needs_data and not cfg.data and \
                not _calibrates_without_data(cfg):
            raise EdgepruneError(f"--precision {cfg.precision} needs data (calibration or "
                                 "fine-tuning): pass --data SPEC")
    if cfg.method != "none" and not cfg.data:
        raise EdgepruneError(f"--method {cfg.method} needs data: pass --data SPEC (or --method "
                             "none)")
    if not Path(cfg.model).is_file():
        raise EdgepruneError(f"model file {cfg.model} does not exist; give the path to a .pt "
                             "file")
    if cfg.reuse_pruning is not None and cfg.method != "none":
        reused_pruning(cfg)
    calibration = cfg.quantize.get("calibration_data")
    if calibration:
        from edgeprune.quantize.calibration import calibration_folder

        calibration_folder(calibration)  # a missing or empty folder fails before any work
    BuildDir(cfg.out).check_usable()
    return target


def run_build(cfg: BuildConfig, *, resume: bool = False, log: Callable[[str], None] | None = None,
              progress=None, stop_after: str | None = None, stages: list[str] | None = None,
              on_stage: Callable[[str], None] | None = None, describe: dict | None = None,
              clear: bool = True) -> BuildState:
    """Run (or, with ``resume``, continue) the pipeline; return the final state.

    ``stages`` picks the stages a command runs (default: all), ``stop_after`` ends the run after
    the named one (a build killed mid-way, in tests). ``describe`` makes it a profile of one
    artifact (its name, precision, ONNX file, engine profile, batch) instead of a build.
    ``clear``: a fresh run first removes what an earlier run wrote into the directory. Messages
    go to ``log``, by default the ``edgeprune`` logger at INFO.
    """
    if log is None:
        import logging

        log = logging.getLogger("edgeprune").info
    from edgeprune import distributed

    if distributed.launched() and describe is None:  # torchrun: one group for the prune stage
        distributed.setup(cfg.prune_config().device if cfg.method != "none" else "cpu")
        if not distributed.is_main():
            return _follow(cfg)
    target = prepare(cfg) if describe is None else _prepare_profile(cfg)
    out = BuildDir(cfg.out)
    created = not out.root.exists()
    try:
        with out.locked():
            state = _initial_state(cfg, out, target, resume, clear)
            ctx = Context(cfg, out, target, log, state, progress, describe or {})
            _check_inputs(ctx, resume)
            _lead(cfg, state, stages, stop_after, describe)
            _run_stages(ctx, stages or STAGE_NAMES, stop_after, on_stage)
            if state.done and state.done[-1] == "report" and describe is None:
                write_json(out / BuildDir.RECORD, _build_record(cfg, state))
    except BaseException:
        if created and _nothing_done(out):  # a run that did nothing leaves nothing behind
            import shutil

            shutil.rmtree(out.root, ignore_errors=True)
        raise
    finally:
        out.remove_work()
    return state


def _follow(cfg: BuildConfig) -> BuildState:
    """A torchrun rank other than 0: join the prune stage if rank 0 runs it, nothing else."""
    from edgeprune import distributed

    distributed.follow_build(cfg, distributed.broadcast_object(None))
    return BuildState({}, cfg.target)


def _lead(cfg: BuildConfig, state: BuildState, stages, stop_after, describe) -> None:
    """Rank 0 of a torchrun build tells the other ranks whether this run prunes."""
    from edgeprune import distributed

    if describe is not None or not distributed.launched():
        return
    names = stages or STAGE_NAMES
    will = (cfg.method != "none" and "prune" in names and "prune" not in state.done
            and stop_after != "load")
    distributed.broadcast_object(will)
    if not will:
        distributed.finish()


def _prepare_profile(cfg: BuildConfig):
    from edgeprune.targets import pick_target

    cfg.validate()
    target = pick_target(cfg.target, cfg.target_file)
    BuildDir(cfg.out).check_usable()
    return target


def _nothing_done(out: BuildDir) -> bool:
    if not out.state.is_file():
        return True
    try:
        return not json.loads(out.state.read_text()).get("done")
    except ValueError:
        return False


def _run_stages(ctx: Context, names: list[str], stop_after: str | None, on_stage) -> None:
    state = ctx.state
    for name, stage in STAGES:
        if name not in names:
            continue
        if name in state.done:
            ctx.log(f"{name}: done in an earlier run, skipped")
        else:
            state.results[name] = stage(ctx)
            state.done.append(name)
            ctx.save()
        if on_stage:
            on_stage(name)
        if stop_after == name:
            break


def _initial_state(cfg: BuildConfig, out: BuildDir, target, resume: bool,
                   clear: bool) -> BuildState:
    fingerprint = {"options": cfg.options(), "model": _file_hash(cfg.model), "data": None}
    if resume and out.state.is_file():
        state = BuildState.read(out.state)
        _compare(state.fingerprint, fingerprint, out.root)
        state.fingerprint["model"] = fingerprint["model"]
        return state
    if clear:
        out.clear()
    return BuildState(fingerprint, target.name)


def _check_inputs(ctx: Context, resume: bool) -> None:
    """The data's fingerprint: recorded on a fresh run, compared on a resumed one."""
    if not ctx.cfg.data or ctx.describe:
        return
    data = ctx.data()
    digest = data_hash(data)
    saved = ctx.state.fingerprint.get("data")
    if resume and saved is not None and saved != digest:
        raise EdgepruneError(f"the data ({ctx.cfg.data}) changed since the build in "
                             f"{ctx.out.root} started; rerun without --resume to start over")
    ctx.state.fingerprint["data"] = digest


def _compare(saved: dict, now: dict, root: Path) -> None:
    """Refuse to resume naming the first option or input that differs."""
    old, new = saved.get("options", {}), now["options"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise EdgepruneError(f"the build in {root} was made with {key} = {old.get(key)!r}, "
                                 f"now {new.get(key)!r}; rerun with the same options, or without "
                                 "--resume to start over")
    if saved.get("model") != now["model"]:
        raise EdgepruneError(f"the model file changed since the build in {root} started; rerun "
                             "without --resume to start over")


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_hash(data) -> str:
    """The content of every split (images and labels) and the class names."""
    h = hashlib.sha256(json.dumps(list(data.class_names)).encode())
    for split in (data.train, data.val, data.test):
        for array in (split.x, split.y):
            h.update(str(array.shape).encode())
            if hasattr(array, "fingerprint"):  # images read from files: hashed file by file
                array.fingerprint(h)
            else:
                h.update(memoryview(array.tobytes()))
    return h.hexdigest()


def _build_record(cfg: BuildConfig, state: BuildState) -> dict:
    import numpy
    import onnx
    import onnxruntime
    import torch

    return {
        "command": " ".join(sys.argv) if Path(sys.argv[0]).name == "edgeprune" else None,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "seed": cfg.seed,
        "stages": state.done,
        "fingerprint": state.fingerprint,
        "versions": {"edgeprune": __version__, "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "numpy": numpy.__version__, "python": platform.python_version()},
    }


def load_config_file(path: Path) -> dict:
    """Read an edgeprune.toml: top-level build options plus [prune], [quantize], [engine]; every
    name is checked here, and types when the config is validated."""
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgepruneError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EdgepruneError(f"config file {path} is not valid TOML ({e})") from None
    except OSError as e:
        raise EdgepruneError(f"config file {path} cannot be read ({e.strerror})") from None
    if "trust_model" in doc:
        raise EdgepruneError(f"{path}: trust_model cannot be set in a config file (unpickling "
                             "runs code from the model file); pass --trust-model on the command "
                             "line if you trust it")
    unknown = sorted(set(doc) - set(FILE_KEYS) - set(FILE_TABLES))
    if unknown:
        raise EdgepruneError(f"{path}: unknown option(s) {', '.join(unknown)}; the top level "
                             f"takes {', '.join(FILE_KEYS)} and [prune], [quantize], [engine]")
    for table in FILE_TABLES:
        if table in doc and not isinstance(doc[table], dict):
            raise EdgepruneError(f"{path}: {table} must be a table ([{table}]), got "
                                 f"{doc[table]!r}")
    return doc
