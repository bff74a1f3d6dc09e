"""``edgeprune profile``'s stage: one artifact (checkpoint or ONNX) profiled for one target.

A checkpoint is exported to ONNX first (``model.onnx`` in the output folder); an ONNX model is
profiled as it is, at the precision it was quantized to unless one is given. With a data spec
the test-split accuracy is measured with ONNX Runtime; with a TensorRT engine its latency is
measured on the device (this must run where the engine was built).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeprune import __version__
from edgeprune.errors import EdgepruneError
from edgeprune.targets import PRECISIONS, load_target


@dataclass
class ProfileConfig:
    artifact: Path
    target: str
    data: str | None = None
    out: Path = Path("profile")
    engine: Path | None = None
    precision: str | None = None  # None: detected from the ONNX model
    batch: int = 1
    measure_host: bool = True
    trust_model: bool = False


def run_profile(cfg: ProfileConfig, log=print) -> dict:
    """Profile ``cfg.artifact`` for ``cfg.target``; write report.{json,md,html}; return it."""
    from edgeprune.onnx_file import read_onnx
    from edgeprune.profile import detect_precision, profile_variant
    from edgeprune.report import write_reports

    target = load_target(cfg.target)
    artifact = Path(cfg.artifact)
    if not artifact.is_file():
        raise EdgepruneError(f"{artifact} does not exist; give a checkpoint (.pt) or an ONNX "
                             "model (.onnx)")
    out = Path(cfg.out)
    model_info, params, onnx_path = None, None, artifact
    if artifact.suffix.lower() != ".onnx":
        onnx_path, model_info, params = _export_checkpoint(artifact, out, cfg.trust_model, log)
    # empty, not ONNX, or with external data: refused here, before any work
    precision = cfg.precision or detect_precision(read_onnx(onnx_path))
    if precision not in PRECISIONS:
        raise EdgepruneError(f"unknown precision {precision!r}; choose one of "
                             f"{', '.join(PRECISIONS)}")
    accuracy = _accuracy(onnx_path, cfg.data, model_info, log) if cfg.data else None
    engine_profile = _engine_profile(cfg.engine, log) if cfg.engine else None
    variant = profile_variant(onnx_path, target, name=artifact.stem, precision=precision,
                              accuracy=accuracy, params=params, measure_host=cfg.measure_host,
                              batch=cfg.batch, engine_profile=engine_profile)
    report = {"target": {"name": target.name, "display_name": target.display_name,
                         "runtime": target.runtime},
              "edgeprune_version": __version__,
              "model": model_info or {"path": str(artifact)},
              "fps": variant["power_w"]["fps"],
              "variants": [variant],
              "pruning": None}
    write_reports(report, out)
    return report


def _export_checkpoint(path: Path, out: Path, trust_model: bool, log) -> tuple[Path, dict, int]:
    from edgeprune.checkpoint import load_model
    from edgeprune.complexity import model_complexity
    from edgeprune.export import export_onnx

    loaded = load_model(path, trust_model=trust_model)
    shape = loaded.info.input_shape
    if shape is None:
        raise EdgepruneError(f"{path} does not record its input shape; export it to ONNX with "
                             "`edgeprune build` and profile the .onnx file")
    onnx_path = out / "model.onnx"
    rep = export_onnx(loaded.model, tuple(shape), onnx_path)
    log(f"exported {onnx_path} ({rep.nodes} nodes, max |ORT − PyTorch| = {rep.max_abs_diff:.1e})")
    info = {"path": str(path), "arch": loaded.info.arch, "input_shape": list(shape),
            "num_classes": loaded.info.num_classes, "removed_units": loaded.info.removed_units,
            "normalization": ({"mean": list(loaded.info.mean), "std": list(loaded.info.std)}
                              if loaded.info.mean is not None else None)}
    return onnx_path, info, model_complexity(loaded.model, tuple(shape)).params


def _accuracy(onnx_path: Path, spec: str, info: dict | None, log) -> float:
    from edgeprune.data import load_dataset
    from edgeprune.export import onnx_accuracy

    data = load_dataset(spec)
    norm = (info or {}).get("normalization")
    if norm:  # the checkpoint's normalisation, not the data set's own statistics
        data = data.with_normalization(norm["mean"], norm["std"])
    acc = onnx_accuracy(onnx_path, data, "test")
    log(f"test accuracy under ONNX Runtime: {100 * acc:.2f}%")
    return acc


def _engine_profile(engine: Path, log) -> dict:
    if not Path(engine).is_file():
        raise EdgepruneError(f"engine file {engine} does not exist; build it on the device with "
                             "`edgeprune build`")
    try:
        from edgeprune.engine.runtime import profile_engine
    except ImportError as e:
        raise EdgepruneError(f"cannot time a TensorRT engine here ({e}); run `edgeprune profile "
                             "--engine` on the device, where tensorrt is installed") from None
    log(f"timing {engine} on the device")
    return profile_engine(engine, warmup_s=2.0, iterations=200)
