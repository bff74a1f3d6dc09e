"""Profile a model variant for a target: per-layer costs, memory, energy and latency.

``profile_variant(onnx_path, target, name=, precision=)`` returns one ``variants`` entry of
report.json (see edgeprune/report/schema.json): accounting from the ONNX graph
(:mod:`.accounting`), weights and peak activation memory (:mod:`.memory`), 45 nm energy
(:mod:`.energy`), latency measured on the host and estimated for the target (:mod:`.latency`),
and the device measurement from a TensorRT engine profile when one is given.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.profile.accounting import GraphAccount, NodeCost, account, detect_precision
from edgeprune.profile.energy import DEFAULT_FPS, energy_summary, load_energy_table
from edgeprune.profile.latency import (
    batch_is_dynamic,
    estimate_latency_ms,
    measure_host,
    summarize_times,
)
from edgeprune.profile.memory import peak_activation_memory, weight_bytes_by_precision
from edgeprune.targets import Target

__all__ = ["GraphAccount", "NodeCost", "account", "detect_precision", "measure_host",
           "profile_variant", "summarize_times"]


def profile_variant(onnx_path: Path, target: Target, *, name: str, precision: str,
                    accuracy: float | None = None, params: int | None = None,
                    measure_host: bool = True, batch: int = 1,
                    engine_profile: dict | None = None, fps: float = DEFAULT_FPS) -> dict:
    """Profile one variant (an ONNX file at ``precision``) for ``target``.

    ``params`` is the PyTorch-side count when known (BatchNorm folding changes the ONNX count
    slightly); ``batch`` > 1 adds a host measurement at that batch when the model's batch
    dimension is dynamic; ``engine_profile`` is what
    ``edgeprune.engine.runtime.profile_engine`` returned on the device.
    """
    import onnx

    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path))
    acc = account(model, precision)
    peak = peak_activation_memory(acc)
    table = load_energy_table(target.section("energy").get("table", "45nm"))
    energy, layer_energy = energy_summary(acc.nodes, table, target.on_chip_bytes, fps)
    est_ms, layer_ms = estimate_latency_ms(acc.nodes, target)
    host = host_batch = None
    if measure_host:
        host = measure_host_latency(onnx_path)
        if batch > 1 and batch_is_dynamic(onnx_path):
            host_batch = measure_host_latency(onnx_path, batch=batch)
    measured = _device_latency(engine_profile)
    if measured is None and target.runtime == "onnxruntime-cpu" and host is not None:
        measured = {"median": host["median"], "p90": host["p90"], "source": "onnxruntime-cpu"}
    layers = [n.row() | {"energy_mj": e, "latency_estimated_ms": t}
              for n, e, t in zip(acc.nodes, layer_energy, layer_ms)]
    return {
        "name": name,
        "precision": precision,
        "onnx": onnx_path.name,
        "params": int(params if params is not None else acc.params),
        "onnx_params": acc.params,
        "macs": acc.macs,
        "accuracy": accuracy,
        "weights_bytes": acc.weight_bytes,
        "weights_bytes_by_precision": weight_bytes_by_precision(acc),
        "peak_activation_bytes": peak.bytes,
        "peak_activation_node": peak.node,
        "latency_ms": {"host_measured": host, "host_measured_batch": host_batch,
                       "target_estimated": est_ms, "target_measured": measured},
        **energy,
        "layers": layers,
    }


def measure_host_latency(onnx_path: Path, batch: int = 1) -> dict:
    """The host measurement with the report's defaults (1 s warm-up, up to 200 runs / 10 s)."""
    return measure_host(onnx_path, batch=batch, warmup_s=1.0, runs=200, max_s=10.0)


def _device_latency(profile: dict | None) -> dict | None:
    """Median and p90 (ms) from a TensorRT engine profile, whatever its key spelling."""
    if not profile:
        return None
    src = profile.get("latency_ms", profile)
    median = src.get("median", src.get("median_ms"))
    if median is None:
        return None
    p90 = src.get("p90", src.get("p90_ms", median))
    out = {"median": float(median), "p90": float(p90), "source": "tensorrt"}
    for key in ("device", "precision", "engine", "power_w", "energy_mj"):
        if key in profile:
            out[key] = profile[key]
    return out
