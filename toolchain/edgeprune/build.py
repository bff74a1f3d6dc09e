"""``edgeprune build``: the whole pipeline for one target, stage by stage.

    load → prune → export → quantize → check → engine → profile → report

Each stage is a small function that reads the previous stages' artifacts from the build directory
and writes its own; what it decided goes into ``build-state.json``. A finished stage is recorded
there, so ``resume=True`` continues an interrupted build from the first unfinished stage (the
options must be the same: they are part of the state).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from edgeprune import __version__
from edgeprune.atomic import write_json
from edgeprune.errors import EdgepruneError

STATE_FILE = "build-state.json"
METHODS = ("mspic", "random", "l1", "none")


@dataclass
class BuildConfig:
    """Everything ``edgeprune build`` was asked to do. ``prune``, ``quantize`` and ``engine``
    hold overrides of those stages' own configs (field name -> value)."""

    target: str
    model: Path
    data: str | None = None
    out: Path = Path("out")
    precision: str = "auto"
    method: str = "mspic"
    allow_emulated: bool = False
    trust_model: bool = False
    seed: int = 0
    measure_host: bool = True
    fps: float = 30.0
    prune: dict = field(default_factory=dict)
    quantize: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        d = asdict(self)
        d["model"] = str(Path(self.model).resolve())
        d.pop("out")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Context:
    """What the stages share: the config, the target, the data, and the recorded results."""

    cfg: BuildConfig
    out: Path
    log: Callable[[str], None]
    state: dict
    progress: object = None  # a rich Progress shared by the stages, or None
    _cache: dict = field(default_factory=dict)

    @property
    def results(self) -> dict:
        return self.state["results"]

    @property
    def target(self):
        from edgeprune.targets import load_target

        return load_target(self.cfg.target)

    def original(self):
        if "original" not in self._cache:
            from edgeprune.checkpoint import load_model

            self._cache["original"] = load_model(self.cfg.model, trust_model=self.cfg.trust_model)
        return self._cache["original"]

    def pruned(self):
        from edgeprune.checkpoint import load_model

        return load_model(self.out / "pruned.pt")

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
        write_json(self.out / STATE_FILE, self.state)


# ---------------------------------------------------------------- stages


def stage_load(ctx: Context) -> dict:
    from edgeprune.complexity import model_complexity
    from edgeprune.targets import resolve_precision
    from edgeprune.train import evaluate

    cfg = ctx.cfg
    if cfg.method not in METHODS:
        raise EdgepruneError(f"unknown pruning method {cfg.method!r}; choose one of: "
                             f"{', '.join(METHODS)}")
    precision = resolve_precision(ctx.target, cfg.precision, allow_emulated=cfg.allow_emulated)
    loaded = ctx.original()
    data = ctx.data()
    if data is None and (cfg.method != "none" or precision in ("int8", "binary")):
        raise EdgepruneError(f"--method {cfg.method} and --precision {precision} need data: pass "
                             "--data SPEC (or --method none --precision fp16|fp32)")
    if loaded.info.input_shape is None:
        raise EdgepruneError(f"{cfg.model} does not record its input shape; pass --data so "
                             "edgeprune can take it from the data set")
    size = model_complexity(loaded.model, tuple(loaded.info.input_shape))
    acc = evaluate(loaded.model, data, "test").accuracy if data is not None else None
    ctx.log(f"loaded {loaded.info.arch}: {size.params:,} params, {size.macs:,} MACs"
            + (f", test accuracy {acc:.2%}" if acc is not None else ""))
    return {"precision": precision, "arch": loaded.info.arch,
            "input_shape": list(loaded.info.input_shape), "params": size.params,
            "macs": size.macs, "accuracy": acc}


def stage_prune(ctx: Context) -> dict:
    from edgeprune.checkpoint import save_checkpoint

    loaded = ctx.original()
    if ctx.cfg.method == "none":
        save_checkpoint(ctx.out / "pruned.pt", loaded.model, loaded.info)
        ctx.log("pruning skipped (--method none)")
        return {"summary": None}
    from edgeprune.prune import PruneConfig, prune_model

    config = _configure(PruneConfig(), {"method": ctx.cfg.method, "seed": ctx.cfg.seed,
                                        "resume": True, **ctx.cfg.prune}, "prune")
    result = prune_model(loaded, ctx.data(), config, ctx.out, progress=ctx.progress)
    s = {**result.summary, "stage_log": [
        {"stage": r["stage"] + 1, "units": f"{r['units_before']} → {r['units_after']}",
         "removed": len(r["removed"]), "params_after": r["params_after"],
         "val_error_start": round(r["val_error_start"], 4),
         "val_error_finetuned": round(r["val_error_finetuned"], 4)}
        for r in result.record["stages"]]}
    ctx.log(f"pruned with {s['method']}: {s['units_before']} → {s['units_after']} units, "
            f"{s['params_before']:,} → {s['params_after']:,} params")
    return {"summary": s}


def stage_export(ctx: Context) -> dict:
    from edgeprune.export import export_onnx

    shape = tuple(ctx.results["load"]["input_shape"])
    original = export_onnx(ctx.original().model, shape, ctx.out / "original.onnx")
    pruned_model = ctx.pruned().model
    pruned = export_onnx(pruned_model, shape, ctx.out / "model.onnx")
    ctx.log(f"exported model.onnx (opset {pruned.opset}, {pruned.nodes} nodes, "
            f"max |ORT − PyTorch| = {pruned.max_abs_diff:.1e})")
    acc = None
    if ctx.data() is not None:
        from edgeprune.train import evaluate

        acc = evaluate(pruned_model, ctx.data(), "test").accuracy
    return {"original": original.to_dict(), "pruned": pruned.to_dict(), "pruned_accuracy": acc}


def stage_quantize(ctx: Context) -> dict:
    precision = ctx.results["load"]["precision"]
    if precision == "fp32":
        return {"precision": "fp32", "onnx": "model.onnx", "summary": None}
    from edgeprune.quantize import QuantizeConfig, quantize_model

    config = _configure(QuantizeConfig(), {"seed": ctx.cfg.seed, **ctx.cfg.quantize}, "quantize")
    data = ctx.data()
    result = quantize_model(ctx.pruned(), ctx.out / "model.onnx", data, precision, ctx.target,
                            ctx.out, config, progress=ctx.progress)
    acc = f", accuracy {result.accuracy:.2%}" if result.accuracy is not None else ""
    ctx.log(f"quantized to {precision} ({result.flavour}): {Path(result.onnx_path).name}{acc}")
    return {"precision": precision, "onnx": Path(result.onnx_path).name,
            "flavour": result.flavour, "accuracy": result.accuracy,
            "fp32_accuracy": result.fp32_accuracy,
            "calibration_cache": (Path(result.calibration_cache).name
                                  if result.calibration_cache else None),
            "summary": result.summary}


def _engine_onnx(ctx: Context) -> tuple[str, str]:
    """The ONNX the engine is built from, and the precision it is built at.

    TensorRT takes fp16 as a builder flag on the fp32 graph, int8 from the QDQ graph; the binary
    model runs with float kernels (its 1-bit form is a storage format).
    """
    q = ctx.results["quantize"]
    precision = q["precision"]
    if precision == "fp16":
        return "model.onnx", "fp16"
    if precision == "binary":
        return q["onnx"], "fp16" if "fp16" in ctx.target.fast_precisions else "fp32"
    return q["onnx"], precision


def stage_check(ctx: Context) -> dict:
    if ctx.target.runtime != "tensorrt":
        return {"skipped": f"{ctx.target.name} runs ONNX Runtime, not TensorRT"}
    from edgeprune.compat import check_onnx

    onnx_name, precision = _engine_onnx(ctx)
    report = check_onnx(ctx.out / onnx_name, ctx.target, precision)
    ctx.log(f"TensorRT {ctx.target.section('software').get('tensorrt')} compatibility: "
            f"{onnx_name} passes")
    return {"onnx": onnx_name, "precision": precision, "report": _as_dict(report)}


def stage_engine(ctx: Context) -> dict:
    if ctx.target.runtime != "tensorrt":
        return {"skipped": f"{ctx.target.name} runs ONNX Runtime: no engine to build"}
    from edgeprune.engine import make_engine

    onnx_name, precision = _engine_onnx(ctx)
    cache = ctx.results["quantize"].get("calibration_cache")
    result = make_engine(ctx.out / onnx_name, ctx.target, precision, ctx.out / "engine",
                         calib_cache=ctx.out / cache if cache else None,
                         dla_core=ctx.cfg.engine.get("dla_core"))
    where = "engine" if result.kind == "engine" else "build script for the device"
    ctx.log(f"wrote the {where}: {Path(result.path).relative_to(ctx.out)}")
    return {"kind": result.kind, "path": str(Path(result.path).relative_to(ctx.out)),
            "plan": result.plan}


def stage_profile(ctx: Context) -> dict:
    from edgeprune.profile import profile_variant

    r = ctx.results
    target, fps = ctx.target, ctx.cfg.fps
    pruning = r["prune"]["summary"]
    q = r["quantize"]
    variants = [("original", "fp32", "original.onnx", r["load"]["accuracy"])]
    if pruning is not None:
        variants.append(("pruned", "fp32", "model.onnx", r["export"]["pruned_accuracy"]))
    if q["precision"] != "fp32":
        variants.append((f"pruned-{q['precision']}", q["precision"], q["onnx"], q["accuracy"]))
    rows = []
    for name, precision, onnx_name, acc in variants:
        rows.append(profile_variant(ctx.out / onnx_name, target, name=name, precision=precision,
                                    accuracy=acc, measure_host=ctx.cfg.measure_host, fps=fps))
        ctx.log(f"profiled {name} ({precision})")
    return {"variants": rows}


def stage_report(ctx: Context) -> dict:
    from edgeprune.report import write_reports

    r = ctx.results
    target = ctx.target
    report = {
        "target": {"name": target.name, "display_name": target.display_name,
                   "runtime": target.runtime, **{k: target.section(k) for k in
                                                 ("gpu", "cpu", "software") if target.section(k)}},
        "edgeprune_version": __version__,
        "model": {"path": str(ctx.cfg.model), "arch": r["load"]["arch"],
                  "input_shape": r["load"]["input_shape"]},
        "precision": r["load"]["precision"],
        "variants": r["profile"]["variants"],
        "pruning": r["prune"]["summary"],
        "quantization": r["quantize"]["summary"],
        "engine": {k: v for k, v in r["engine"].items() if k != "plan"},
        "mi_plot": "mspic.png" if (ctx.out / "mspic.png").is_file() else None,
        "fps": ctx.cfg.fps,
    }
    write_reports(report, ctx.out)
    ctx.log(f"wrote report.json, report.md and report.html in {ctx.out}")
    return {"files": ["report.json", "report.md", "report.html"]}


STAGES: list[tuple[str, Callable[[Context], dict]]] = [
    ("load", stage_load), ("prune", stage_prune), ("export", stage_export),
    ("quantize", stage_quantize), ("check", stage_check), ("engine", stage_engine),
    ("profile", stage_profile), ("report", stage_report),
]


# ---------------------------------------------------------------- driver


def run_build(cfg: BuildConfig, *, resume: bool = False, log: Callable[[str], None] = print,
              progress=None, stop_after: str | None = None,
              on_stage: Callable[[str], None] | None = None) -> dict:
    """Run (or, with ``resume``, continue) the build; return the final state.

    ``stop_after`` ends the run after the named stage (tests use it to simulate a build that was
    killed mid-way).
    """
    out = Path(cfg.out)
    state = _initial_state(cfg, out, resume)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(cfg, out, log, state, progress)
    ctx.target  # noqa: B018  (an unknown target fails before any work)
    for name, stage in STAGES:
        if name in state["done"]:
            log(f"{name}: done in an earlier run, skipped")
        else:
            state["results"][name] = stage(ctx)
            state["done"].append(name)
            ctx.save()
        if on_stage:
            on_stage(name)
        if stop_after == name:
            break
    if state["done"][-1] == STAGES[-1][0]:
        write_json(out / "build.json", _build_record(cfg, state))
    return state


def _initial_state(cfg: BuildConfig, out: Path, resume: bool) -> dict:
    path = out / STATE_FILE
    if resume and path.is_file():
        state = json.loads(path.read_text())
        if state.get("fingerprint") != cfg.fingerprint():
            raise EdgepruneError(f"the build in {out} was made with other options; rerun it "
                                 "with the same options, or without --resume to start over")
        return state
    return {"fingerprint": cfg.fingerprint(), "target": cfg.target, "done": [], "results": {}}


def _build_record(cfg: BuildConfig, state: dict) -> dict:
    import numpy
    import onnx
    import onnxruntime
    import torch

    return {
        "command": " ".join(sys.argv) if Path(sys.argv[0]).name == "edgeprune" else None,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "seed": cfg.seed,
        "stages": state["done"],
        "versions": {"edgeprune": __version__, "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "numpy": numpy.__version__, "python": platform.python_version()},
    }


def _configure(config, overrides: dict, section: str):
    """A stage config with ``overrides`` applied, rejecting names the stage does not have."""
    known = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise EdgepruneError(f"[{section}] has no option {', '.join(unknown)}; its options are: "
                             f"{', '.join(sorted(known))}")
    return replace(config, **overrides)


def _as_dict(obj) -> dict:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    try:
        return asdict(obj)
    except TypeError:
        return dict(obj)


def load_config_file(path: Path) -> dict:
    """Read an edgeprune.toml: top-level build options plus [prune], [quantize], [engine]."""
    import tomllib

    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgepruneError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise EdgepruneError(f"config file {path} is not valid TOML ({e})") from None
