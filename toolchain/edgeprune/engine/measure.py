"""The device loop: what the Jetson measured goes into the build's own report.

``measure_build(build_dir, engine=...)`` runs on the device: it times the engine (latency,
board power, energy per inference), exports the per-layer profile and layer information, reads
the power mode and clocks, and with the build's testset.npz measures the engine's top-1.
``measure_build(build_dir, trtexec_dir=...)`` reads what build_engine.sh's trtexec wrote on a
device without edgeprune (times, profile, layers, device-state.txt, and accuracy.json when an
edgeprune run measured one). Either way the figures land in the variant the engine was built
from: ``latency_ms.target_measured`` and ``device`` in report.json, then report.md and .html are
written again. Everything read or measured is kept in BUILD_DIR/device/ as well.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgeprune.builddir import BuildDir
from edgeprune.errors import EdgepruneError

DEVICE_DIR = BuildDir.DEVICE
MEASURED_NAME, ACCURACY_NAME = "measured.json", "accuracy.json"
MAX_ACCURACY_GAP = 0.01  # top-1, host ONNX Runtime minus engine: more than this is flagged


@dataclass
class MeasureConfig:
    build_dir: Path
    engine: Path | None = None
    trtexec_dir: Path | None = None
    accuracy: bool = True  # with --engine: also run the test split through it
    max_accuracy_gap: float = MAX_ACCURACY_GAP
    warmup_s: float = 2.0
    iterations: int = 200


def measure_build(cfg: MeasureConfig, log=print) -> dict:
    """Measure (or read) the device's figures, write them into the build's reports; return the
    updated report."""
    from edgeprune.report import read_report, write_reports

    build = Path(cfg.build_dir)
    if (cfg.engine is None) == (cfg.trtexec_dir is None):
        raise EdgepruneError("give either --engine (run on the device) or --trtexec-dir (files "
                             "build_engine.sh wrote on the device), not both or neither")
    report = read_report(build)
    variant = engine_variant(report, build)
    out = build / DEVICE_DIR  # created once there is something to keep
    found = (_measure_engine(cfg, variant, out, log) if cfg.engine
             else _read_files(Path(cfg.trtexec_dir), variant, out, log))
    device = device_record(found, variant, report, cfg.max_accuracy_gap)
    variant["latency_ms"]["target_measured"] = found["latency"]
    variant["device"] = device
    from edgeprune.atomic import write_json

    write_json(out / MEASURED_NAME, {"variant": variant["name"], **device,
                                     "latency_ms": found["latency"]})
    write_reports(report, build)
    log(f"{variant['name']}: measured {found['latency']['median']:.3f} ms median on the device "
        f"({device['state_text']}); wrote report.json, report.md, report.html in {build}")
    return report


def engine_variant(report: dict, build: Path) -> dict:
    """The report variant the engine runs: the one at the engine plan's precision (an fp16
    engine is built from the fp32 ONNX with the FP16 flag: it is the fp16 variant), preferring
    the one whose ONNX file the plan names; else the last variant (the most processed one)."""
    import json

    from edgeprune.engine.plan import PLAN_NAME

    plan_file = build / BuildDir.ENGINE / PLAN_NAME
    try:
        plan = json.loads(plan_file.read_text(encoding="utf-8")) if plan_file.is_file() else {}
        onnx, precision = Path(str(plan.get("onnx", ""))).name, plan.get("precision")
    except (ValueError, AttributeError):
        onnx = precision = None
    variants = report["variants"]
    same = [v for v in variants if v["precision"] == precision] or variants
    named = [v for v in same if v.get("onnx") and Path(v["onnx"]).name == onnx]
    return (named or same)[-1]


# ---------------------------------------------------------------- on the device


def _measure_engine(cfg: MeasureConfig, variant: dict, out: Path, log) -> dict:
    from edgeprune.engine import device
    from edgeprune.engine.device_state import read_device_state
    from edgeprune.engine.runtime import profile_engine
    from edgeprune.engine.trt_profile import join_layers_in

    state = read_device_state()
    log(f"timing {cfg.engine} on the device")
    prof = profile_engine(cfg.engine, warmup_s=cfg.warmup_s, iterations=cfg.iterations,
                          export_dir=out)
    lat = prof["latency_ms"]
    found = {"latency": {k: lat[k] for k in ("median", "p90", "p10", "mean", "min", "runs")}
             | {"source": prof["timer"]},
             "tensorrt": prof.get("tensorrt"), "state": state,
             "power": {k: prof.get(k) for k in ("power_w", "power_source", "power_note",
                                                "energy_mj")},
             "layers": join_layers_in(out, variant["layers"]), "files": str(out)}
    testset = Path(cfg.build_dir) / BuildDir.TESTSET
    script_result = Path(cfg.build_dir) / BuildDir.ENGINE / ACCURACY_NAME
    if cfg.accuracy and device.tensorrt_version() is None and script_result.is_file():
        found["accuracy"] = _read_accuracy(script_result)  # engine_accuracy.py's, run before
    elif cfg.accuracy and testset.is_file() and device.tensorrt_version() is None:
        found["accuracy_note"] = ("engine accuracy not measured here: the tensorrt Python "
                                  "package does not import; run engine/engine_accuracy.py with "
                                  "the system python3 (it writes engine/accuracy.json, read "
                                  "here next time)")
    elif cfg.accuracy and testset.is_file():
        from edgeprune.atomic import write_json
        from edgeprune.engine.accuracy import engine_accuracy

        log(f"running the test split ({testset.name}) through the engine")
        found["accuracy"] = engine_accuracy(cfg.engine, testset)
        out.mkdir(exist_ok=True)
        write_json(out / ACCURACY_NAME, found["accuracy"])
    elif cfg.accuracy:
        found["accuracy_note"] = (f"no {testset.name} in the build directory (built without "
                                  "--data): engine accuracy not measured")
    return found


# ---------------------------------------------------------------- files from elsewhere


def _read_files(folder: Path, variant: dict, out: Path, log) -> dict:

    from edgeprune.engine.device_state import parse_state_file
    from edgeprune.engine.plan import (
        LAYERS_NAME,
        LOG_NAME,
        PROFILE_NAME,
        STATE_NAME,
        TIMES_NAME,
        WARMUP_MS,
    )
    from edgeprune.engine.trt_profile import read_trtexec_dir

    if not folder.is_dir():
        raise EdgepruneError(f"--trtexec-dir {folder} is not a folder; give the folder "
                             f"build_engine.sh wrote {TIMES_NAME} into (the build's engine/)")
    log_file = folder / LOG_NAME
    warmup = _warmup_ms(log_file.read_text(errors="replace")) if log_file.is_file() else None
    data = read_trtexec_dir(folder, variant["layers"], warmup_ms=warmup or WARMUP_MS)
    state_file = folder / STATE_NAME
    state = parse_state_file(state_file.read_text(errors="replace")) if state_file.is_file() \
        else None
    out.mkdir(exist_ok=True)
    for name in (TIMES_NAME, PROFILE_NAME, LAYERS_NAME, LOG_NAME, STATE_NAME, ACCURACY_NAME):
        src = folder / name
        if src.is_file() and src.resolve() != (out / name).resolve():
            shutil.copyfile(src, out / name)  # the build keeps its evidence
    lat = data["latency_ms"]
    found = {"latency": {k: lat[k] for k in ("median", "p90", "p10", "mean", "min", "runs")}
             | {"source": "trtexec"},
             "tensorrt": data["tensorrt"], "state": state, "layers": data.get("layers"),
             "power": {"power_w": None, "power_source": None,
                       "power_note": "power not measured: trtexec's files hold no power; run "
                                     "`edgeprune profile BUILD_DIR --engine` on the device"},
             "files": str(folder)}
    if (folder / ACCURACY_NAME).is_file():
        found["accuracy"] = _read_accuracy(folder / ACCURACY_NAME)
    log(f"read trtexec's files in {folder}")
    return found


def _read_accuracy(path: Path) -> dict:
    """engine_accuracy.py's result: {"accuracy": top-1 in [0, 1], "images", ...}."""
    import json

    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        if not 0 <= float(rec["accuracy"]) <= 1:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise EdgepruneError(f"{path} is not an accuracy record written by engine_accuracy.py; "
                             "run it again") from None
    return rec


def _warmup_ms(log: str) -> float | None:
    """trtexec's warm-up from its log: the command line it echoes (--warmUp=2000), or its
    Inference Options ("Duration: 0s (+ 2000ms warm up)")."""
    m = re.search(r"--warmUp=(\d+)", log) or re.search(r"\(\+ (\d+)ms warm up\)", log)
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------- the record


def device_record(found: dict, variant: dict, report: dict, max_gap: float) -> dict:
    """``variant["device"]``: the state beside the figures, power, energy, accuracy, layers."""
    from edgeprune.engine.device_state import describe

    power = found.get("power") or {}
    rec = {"timer": found["latency"]["source"], "tensorrt": found.get("tensorrt"),
           "state": found.get("state"), "state_text": describe(found.get("state")),
           "estimate_assumed": estimate_assumed(report), **power, "files": found.get("files")}
    if found.get("layers"):
        rec["layers"] = found["layers"]["layers"]
        rec["layers_summary"] = found["layers"]["summary"]
    acc = found.get("accuracy")
    if acc:
        host = variant.get("accuracy")
        gap = None if host is None else host - acc["accuracy"]
        rec["accuracy"] = {"engine": acc["accuracy"], "images": acc.get("images"),
                           "host_onnxruntime": host, "gap": gap, "max_gap": max_gap,
                           "flagged": gap is not None and gap > max_gap}
    elif found.get("accuracy_note"):
        rec["accuracy_note"] = found["accuracy_note"]
    return rec


def estimate_assumed(report: dict) -> dict:
    """What the estimate assumed of the device: the clock and factors from the target file."""
    gpu = report.get("target", {}).get("gpu") or {}
    out = {"gpu_mhz": gpu.get("max_clock_mhz"), "source": "target file [gpu] max_clock_mhz"}
    try:
        from edgeprune.targets import load_target

        t = load_target(report["target"]["name"])
        out |= {"bandwidth_gbps": t.section("memory").get("bandwidth_gbps"),
                "estimate": dict(t.section("estimate"))}
    except EdgepruneError:  # a --target-file target: its file is not here
        pass
    return out
