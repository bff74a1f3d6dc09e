"""Time a serialized TensorRT engine on the device, and measure its energy per inference.

``profile_engine`` uses the TensorRT Python API where ``tensorrt`` imports, else the device's
trtexec (``--loadEngine ... --exportTimes``); power is sampled during the timed runs (INA3221
sysfs or tegrastats, see power.py), and energy per inference = mean board power x wall time of
the timed runs / runs. Latency is per inference at the engine's batch, inputs already on the GPU.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeprune.engine import device
from edgeprune.engine.power import PowerSampler
from edgeprune.errors import EdgepruneError

TRTEXEC_DEFAULT = "/usr/src/tensorrt/bin/trtexec"


def profile_engine(path: str | Path, warmup_s: float = 2.0, iterations: int = 200, *,
                   trtexec: str | None = None, export_dir: str | Path | None = None) -> dict:
    """Warm up for ``warmup_s``, then time ``iterations`` runs: median, p90 (ms) and, on a
    Jetson, mean board power and energy per inference. With ``export_dir``, the per-layer
    profile and layer information are written there in trtexec's formats (trt_profile.py reads
    them). Raises where no TensorRT is present."""
    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"engine file {path} does not exist; build it with `edgeprune engine`")
    if device.tensorrt_version() is not None:
        runner, source = _api_runner(path, export_dir), "tensorrt-python"
    else:
        exe = trtexec or (TRTEXEC_DEFAULT if Path(TRTEXEC_DEFAULT).is_file()
                          else shutil.which("trtexec"))
        if not exe:
            raise EdgepruneError("neither the tensorrt Python package nor trtexec is on this "
                                 "machine; run `edgeprune profile --engine` on the device, in the "
                                 "edgeprune Jetson container (docker/README.md)")
        runner, source = _trtexec_runner(path, exe, export_dir), "trtexec"
    times_ms, wall_s, power = runner(warmup_s, iterations)
    return summarize(path, times_ms, wall_s, power, source)


def summarize(path: Path, times_ms, wall_s: float, power: dict, source: str) -> dict:
    """The profile dict: latency stats, power and energy per inference, the device."""
    t = np.asarray(times_ms, dtype=np.float64)
    p10, median, p90 = np.percentile(t, [10, 50, 90])
    out = {"engine": str(path), "timer": source, "device": device.jetson_info().get("model")
           or (device.gpu_info() or {}).get("name"), "tensorrt": device.tensorrt_version(),
           "latency_ms": {"median": float(median), "p90": float(p90), "p10": float(p10),
                          "mean": float(t.mean()), "min": float(t.min()), "runs": int(t.size)},
           **power}
    if power.get("power_w") is not None:
        out["energy_mj"] = power["power_w"] * wall_s / t.size * 1e3
    return out


def _trtexec_runner(path: Path, exe: str, export_dir):
    from edgeprune.engine.plan import TIMES_NAME
    from edgeprune.engine.trtexec import layer_profile_command, profile_command

    def run(warmup_s: float, iterations: int):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(export_dir or tmp)
            folder.mkdir(parents=True, exist_ok=True)
            version = _trtexec_version(exe)
            cmd = profile_command(str(path), exe, warmup_ms=int(warmup_s * 1000),
                                  iterations=iterations, out_dir=str(folder), tensorrt=version)
            with PowerSampler() as sampler:
                _run_trtexec(cmd, path, folder / TIMES_NAME)
            times_ms, wall_s = parse_trtexec_times((folder / TIMES_NAME).read_text(),
                                                   warmup_s * 1000)
            if export_dir is not None:  # after the sampled run: the profiler slows its runs
                _run_trtexec(layer_profile_command(str(path), exe, out_dir=str(folder),
                                                   tensorrt=version), path, None)
        # trtexec's warm-up is inside the sampled window: keep only the timed span's samples
        return times_ms, wall_s, _window(sampler, wall_s)

    return run


def _run_trtexec(cmd: list[str], engine: Path, expect: Path | None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or (expect is not None and not expect.is_file()):
        raise EdgepruneError(f"trtexec could not run {engine} (exit {proc.returncode}): "
                             f"{proc.stdout[-300:]} {proc.stderr[-300:]}".strip())


def _trtexec_version(exe: str) -> str | None:
    """The TensorRT release of ``exe`` from its banner (``trtexec --help`` prints it)."""
    from edgeprune.tensorrt_caps import version_from_log

    try:
        proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return version_from_log(proc.stdout + proc.stderr)


def parse_trtexec_times(text: str, warmup_ms: float = 0.0) -> tuple[list[float], float]:
    """Per-inference ms and the wall seconds they span, from ``--exportTimes`` JSON; runs that
    started during the warm-up (listed before TensorRT 8.5) are dropped, as trtexec does."""
    from edgeprune.engine.trt_profile import parse_times

    records = json.loads(text)
    if not records:
        raise EdgepruneError("trtexec exported no timings; raise --iterations")
    timed = [r for r in records if float(r.get("startComputeMs", warmup_ms)) >= warmup_ms]
    times = [float(r.get("latencyMs", r.get("computeMs"))) for r in timed]
    return times, parse_times(records, warmup_ms)["wall_s"]


def _window(sampler: PowerSampler, wall_s: float) -> dict:
    """Power summary over the last ``wall_s`` seconds of samples (the timed runs)."""
    if sampler.samples:
        end = sampler.samples[-1][0]
        sampler.samples = [s for s in sampler.samples if s[0] >= end - wall_s] or sampler.samples
    return sampler.summary()


def _api_runner(path: Path, export_dir=None):
    """Deserialize with the TensorRT runtime and time synchronous runs on a CUDA stream."""
    import tensorrt as trt

    cuda = _cudart()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise EdgepruneError(f"TensorRT {trt.__version__} cannot load {path}: it was built with "
                             "another TensorRT version or for another GPU; rebuild it here")
    context = engine.create_execution_context()
    buffers, stream = _bind(trt, engine, context, cuda), ctypes.c_void_p()
    cuda.cudaStreamCreate(ctypes.byref(stream))
    new_api = hasattr(context, "execute_async_v3")

    def once() -> None:
        if new_api:
            context.execute_async_v3(stream.value)
        else:  # TensorRT 8.2: bindings by index
            context.execute_async_v2(buffers, stream.value)
        cuda.cudaStreamSynchronize(stream)

    def run(warmup_s: float, iterations: int):
        end = time.perf_counter() + warmup_s
        while time.perf_counter() < end:
            once()
        times = []
        with PowerSampler() as sampler:
            start = time.perf_counter()
            for _ in range(iterations):
                t0 = time.perf_counter()
                once()
                times.append((time.perf_counter() - t0) * 1e3)
            wall = time.perf_counter() - start
        if export_dir is not None:
            export_api_profile(trt, engine, context, once, Path(export_dir))
        for ptr in buffers:
            cuda.cudaFree(ctypes.c_void_p(ptr))
        return times, wall, sampler.summary()

    return run


def export_api_profile(trt, engine, context, once, folder: Path, runs: int = 50) -> None:
    """The per-layer profile (an IProfiler over ``runs`` runs) and the engine inspector's layer
    information, written in trtexec's --exportProfile / --exportLayerInfo formats."""
    from edgeprune.atomic import write_json, write_text
    from edgeprune.engine.plan import LAYERS_NAME, PROFILE_NAME

    class Collect(trt.IProfiler):
        def __init__(self):
            super().__init__()
            self.times: dict[str, list[float]] = {}

        def report_layer_time(self, name, ms):
            self.times.setdefault(name, []).append(ms)

    collect = Collect()
    context.profiler = collect
    for _ in range(runs):
        once()
    total = sum(sum(v) for v in collect.times.values()) or 1.0
    rows = [{"count": runs}] + [
        {"name": name, "timeMs": sum(v), "averageMs": sum(v) / len(v),
         "medianMs": float(np.median(v)), "percentage": 100 * sum(v) / total}
        for name, v in collect.times.items()]
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / PROFILE_NAME, rows)
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    write_text(folder / LAYERS_NAME,
               inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def _bind(trt, engine, context, cuda) -> list[int]:
    """Allocate a device buffer per I/O tensor (zeros are as fast as data), batch dims at the
    profile's minimum; return the pointers in binding order."""
    names = ([engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
             if hasattr(engine, "num_io_tensors")
             else [engine.get_binding_name(i) for i in range(engine.num_bindings)])
    pointers = []
    for i, name in enumerate(names):
        new_api = hasattr(engine, "get_tensor_shape")
        shape = list(engine.get_tensor_shape(name) if new_api else engine.get_binding_shape(i))
        is_input = (engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT if new_api
                    else engine.binding_is_input(i))
        if is_input and any(d < 0 for d in shape):
            shape = list(engine.get_tensor_profile_shape(name, 0)[0] if new_api
                         else engine.get_profile_shape(0, i)[0])
            context.set_input_shape(name, shape) if new_api else \
                context.set_binding_shape(i, shape)
        elif not is_input and new_api:
            shape = list(context.get_tensor_shape(name))
        dtype = trt.nptype(engine.get_tensor_dtype(name) if new_api
                           else engine.get_binding_dtype(i))
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = ctypes.c_void_p()
        if cuda.cudaMalloc(ctypes.byref(ptr), max(size, 1)) != 0:
            raise EdgepruneError(f"cannot allocate {size} bytes on the GPU for {name}")
        cuda.cudaMemset(ptr, 0, max(size, 1))
        if new_api:
            context.set_tensor_address(name, ptr.value)
        pointers.append(ptr.value)
    return pointers


def _cudart():
    lib = device._cudart()
    if lib is None:
        raise EdgepruneError("the CUDA runtime library (libcudart) is not on this machine")
    return lib
