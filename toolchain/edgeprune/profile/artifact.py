"""``edgeprune profile``: one artifact (checkpoint or ONNX) profiled for one target, through the
same pipeline as ``edgeprune build`` (its load, export, profile and report stages).

A checkpoint is exported to ONNX first (``model.onnx`` in the output folder); an ONNX model is
profiled as it is, at the precision it was quantized to unless one is given. With a data spec
the test-split accuracy is measured with ONNX Runtime; with a TensorRT engine its latency is
measured on the device (this must run where the engine was built).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.precision import get_precision


@dataclass
class ProfileConfig:
    artifact: Path
    target: str | None
    data: str | None = None
    out: Path = Path("profile")
    engine: Path | None = None
    precision: str | None = None  # None: detected from the ONNX model (fp32 for a checkpoint)
    batch: int = 1
    measure_host: bool = True
    trust_model: bool = False
    target_file: Path | None = None
    mean: str | list[float] | None = None  # --mean/--std: a model that stores no normalization
    std: str | list[float] | None = None


def run_profile(cfg: ProfileConfig, log=print) -> dict:
    """Profile ``cfg.artifact`` for ``cfg.target``; write report.{json,md,html}; return it."""
    import json

    from edgeprune import normalization
    from edgeprune.build import BuildConfig, BuildDir, run_build
    from edgeprune.config import check_range

    mean, std = normalization.parse_pair(cfg.mean, cfg.std)
    artifact = Path(cfg.artifact)
    check_range("batch", cfg.batch)
    if cfg.precision is not None:
        get_precision(cfg.precision)
    if not artifact.is_file():
        raise EdgepruneError(f"{artifact} does not exist; give a checkpoint (.pt) or an ONNX "
                             "model (.onnx)")
    is_onnx = artifact.suffix.lower() == ".onnx"
    precision = cfg.precision or (_detect(artifact) if is_onnx else "fp32")
    build = BuildConfig(target=cfg.target, target_file=cfg.target_file, model=artifact,
                        data=None if is_onnx else cfg.data, out=cfg.out, precision=precision,
                        method="none", measure_host=cfg.measure_host,
                        trust_model=cfg.trust_model, mean=mean, std=std)
    describe = {"name": artifact.stem, "precision": precision, "batch": cfg.batch,
                "onnx": str(artifact.resolve())}
    if cfg.engine:
        describe["engine_profile"] = _engine_profile(cfg.engine, log)
    if is_onnx and cfg.data:
        describe["accuracy"] = _accuracy(artifact, cfg.data, log, mean, std)
    stages = ["profile", "report"] if is_onnx else ["load", "prune", "export", "profile",
                                                      "report"]
    run_build(build, log=log, stages=stages, describe=describe)
    return json.loads((Path(cfg.out) / BuildDir.REPORTS[0]).read_text(encoding="utf-8"))


def _detect(onnx_path: Path) -> str:
    """The precision the graph was quantized to; an empty, non-ONNX or external-data file is
    refused here, before any work."""
    from edgeprune.onnx_file import read_onnx
    from edgeprune.profile import detect_precision

    return detect_precision(read_onnx(onnx_path))


def _accuracy(onnx_path: Path, spec: str, log, mean=None, std=None) -> float:
    """Test accuracy of an ONNX model, which stores no normalization: ``--mean/--std``, else
    the data's own."""
    from edgeprune.data import load_dataset
    from edgeprune.export import onnx_accuracy

    data = load_dataset(spec)
    if mean is not None:
        from edgeprune.normalization import SOURCE_USER

        data = data.with_normalization(mean, std, SOURCE_USER)
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
