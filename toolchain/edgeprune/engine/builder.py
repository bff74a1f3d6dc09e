"""Build the plan's engine on this machine: TensorRT Python API first, the device's trtexec next.

Only on a GPU of the target's compute capability: an engine built for another GPU would not run
on the device (engines are specific to the GPU model and TensorRT version). The Python path uses
the API of TensorRT 8.2 to 10.x (jetson.md): create_network (EXPLICIT_BATCH on 8.x, STRONGLY_TYPED
on 10 with QDQ), OnnxParser, a builder config with the workspace pool limit, FP16/INT8 flags, a
calibrator that replays the calibration cache, DLA with GPU fallback, a persistent timing cache,
then build_serialized_network.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from edgeprune.atomic import write_bytes, write_json
from edgeprune.engine import device
from edgeprune.engine.plan import ENGINE_JSON, ENGINE_NAME, LOG_NAME
from edgeprune.errors import EdgepruneError
from edgeprune.targets import Target
from edgeprune.tensorrt_caps import TensorRT, version_from_log


def build_here(plan: dict, target: Target, out_dir: Path) -> tuple[str | None, str]:
    """Build if this machine can: returns (builder used, "") or (None, why not)."""
    gpu = device.gpu_info()
    if gpu is None:
        return None, "no CUDA GPU on this machine"
    if gpu["compute_capability"] != plan["compute_capability"]:
        return None, (f"this GPU is sm_{gpu['compute_capability'].replace('.', '')}, "
                      f"{target.name} is sm_{plan['compute_capability'].replace('.', '')}")
    if device.tensorrt_version() is not None:
        build_with_api(plan, out_dir)
        return "tensorrt-python", ""
    trtexec = _find_trtexec(plan)
    if trtexec:
        build_with_trtexec(plan, out_dir, trtexec)
        return "trtexec", ""
    return None, "neither the tensorrt Python package nor trtexec is here"


def _find_trtexec(plan: dict) -> str | None:
    path = Path(plan["trtexec_path"])
    return str(path) if path.is_file() else shutil.which("trtexec")


def build_with_api(plan: dict, out_dir: Path) -> Path:
    """Build model.engine with the TensorRT Python API and write engine.json beside it."""
    import tensorrt as trt

    root = Path(plan["root"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse((root / plan["onnx"]).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EdgepruneError(f"TensorRT could not parse {plan['onnx']}: {'; '.join(errors)}")
    config = builder.create_builder_config()
    _configure(trt, builder, config, plan, root)
    cache_path = root / plan["timing_cache"]
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgepruneError("TensorRT failed to build the engine (see its log above); try "
                             "--precision fp32 or without --dla-core")
    engine = write_bytes(root / plan["engine"], bytes(memoryview(serialized)))
    write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    write_engine_json(out_dir, plan, "tensorrt-python", time.perf_counter() - start,
                      tensorrt=trt.__version__)
    return engine


def _network_flags(trt, plan: dict) -> int:
    flags = 0
    if TensorRT.parse(trt.__version__.split("+")[0]).needs_explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan["strongly_typed"]:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def _configure(trt, builder, config, plan: dict, root: Path) -> None:
    """Workspace, precision flags, calibrator, DLA and shape profile, as the plan says."""
    workspace = plan["workspace_mib"] << 20
    if hasattr(config, "set_memory_pool_limit"):  # 8.4+
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # 8.2
        config.max_workspace_size = workspace
    # keep each layer's details (and, 8.6+, its ONNX nodes) for the device's per-layer profile
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if plan["fp16"]:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan["int8"]:
        config.set_flag(trt.BuilderFlag.INT8)
    if plan["calibration_cache"]:
        config.int8_calibrator = cache_calibrator(trt, root / plan["calibration_cache"])
    if plan["dla_core"] is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan["dla_core"]
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if plan["shapes"]:
        profile = builder.create_optimization_profile()
        for name, s in plan["shapes"].items():
            profile.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)


def cache_calibrator(trt, cache_path: Path):
    """An entropy calibrator that only replays a calibration cache (no data on the device):
    TensorRT reads the cache first and never asks for a batch when it matches the network."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            return None  # no data: the cache must cover every tensor

        def read_calibration_cache(self):
            return cache_path.read_bytes()

        def write_calibration_cache(self, cache):
            pass  # the cache came from edgeprune's calibration; keep it as it is

    return CacheCalibrator()


def build_with_trtexec(plan: dict, out_dir: Path, trtexec: str) -> Path:
    """Run the plan's trtexec command here (the device, or its container) and log it."""
    from edgeprune.engine.trtexec import trtexec_command

    root = Path(plan["root"])
    start = time.perf_counter()
    proc = subprocess.run(trtexec_command(plan, trtexec), cwd=root, capture_output=True,
                          text=True, check=False)
    (out_dir / LOG_NAME).write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0 or not (root / plan["engine"]).is_file():
        raise EdgepruneError(f"trtexec failed (exit {proc.returncode}); see {out_dir / LOG_NAME}")
    write_engine_json(out_dir, plan, "trtexec", time.perf_counter() - start,
                      tensorrt=version_from_log(proc.stdout))
    return root / plan["engine"]


def write_engine_json(out_dir: Path, plan: dict, builder: str, seconds: float, *,
                      tensorrt: str | None) -> Path:
    """engine.json: the versions and device the engine is bound to, and how it was built."""
    gpu = device.gpu_info() or {}
    info = {"engine": ENGINE_NAME, "builder": builder, "build_seconds": round(seconds, 2),
            "tensorrt": tensorrt, "cuda_runtime": gpu.get("cuda_runtime"),
            "cuda_driver": gpu.get("cuda_driver"), "gpu": gpu.get("name"),
            "compute_capability": gpu.get("compute_capability"), **device.jetson_info(),
            "target": plan["target"], "precision": plan["precision"]}
    if tensorrt and not TensorRT.parse(tensorrt).same_release(TensorRT.parse(plan["tensorrt"])):
        info["warning"] = (f"built with TensorRT {tensorrt}, the target file says "
                           f"{plan['tensorrt']}: the engine runs only with {tensorrt}")
    return write_json(out_dir / ENGINE_JSON, info)
