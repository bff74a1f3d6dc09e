"""Latency: measured on the host with ONNX Runtime, and estimated for a target from its file.

Host measurement: a CPU session with a recorded thread count, a timed warm-up, then many timed
runs; we report the median, p90 and the spread (p90 − p10) in ms, at batch 1 and, when the model's
batch dimension is dynamic, at a given batch.

Target estimate, per node (a roofline with a launch cost)::

    t = max(MACs × 2 / (peak ops/s at the node's precision × efficiency),
            bytes moved / bandwidth) + launch_overhead

summed over the nodes that launch a kernel (reshapes, weight Q/DQ and activations fused into
the Conv/Gemm before them launch nothing and cost nothing). Memory time counts the weights and
the activation tensors larger than the target's on-chip budget at the DRAM bandwidth, and the
tensors that fit at ``[memory] on_chip_bandwidth_gbps`` (the DRAM bandwidth when absent).
``efficiency`` and ``launch_overhead_us`` come from the target's ``[estimate]`` section
(``efficiency_<precision>`` overrides ``efficiency`` for one precision). A precision the
target has no peak for (binary, int8 on a GPU without fast int8) runs at the fastest float peak
the target has.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from edgeprune.profile.accounting import NodeCost
from edgeprune.targets import Target


def measure_host(onnx_path: str | Path, *, batch: int = 1, threads: int | None = None,
                 warmup_s: float = 0.5, runs: int = 100, max_s: float = 10.0,
                 seed: int = 0) -> dict:
    """Time ``onnx_path`` under ONNX Runtime on this machine's CPU (ms)."""
    from edgeprune.export import ort_session

    threads = threads or os.cpu_count() or 1
    sess = ort_session(onnx_path, threads)
    inp = sess.get_inputs()[0]
    shape = [batch if i == 0 else (d if isinstance(d, int) else 1)
             for i, d in enumerate(inp.shape)]
    dtype = np.float16 if "float16" in inp.type else np.float32
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    feed = {inp.name: x}
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_s:  # warm-up: caches, allocator, thread pool
        sess.run(None, feed)
    times, start = [], time.perf_counter()
    while len(times) < runs and time.perf_counter() - start < max_s:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize_times(times) | {"batch": batch, "threads": threads,
                                     "runtime": "onnxruntime-cpu"}


def summarize_times(times_ms: list[float]) -> dict:
    t = np.asarray(times_ms, dtype=np.float64)
    p10, median, p90 = np.percentile(t, [10, 50, 90])
    return {"median": float(median), "p90": float(p90), "spread": float(p90 - p10),
            "min": float(t.min()), "runs": int(t.size)}


def batch_is_dynamic(onnx_path: str | Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return not dim.HasField("dim_value")


def estimate_factors(target: Target, precision: str) -> tuple[float, float]:
    """(efficiency, launch overhead in seconds) for ``precision`` from the target file."""
    est = target.section("estimate")
    eff = float(est.get(f"efficiency_{precision}", est.get("efficiency", 0.5)))
    return eff, float(est.get("launch_overhead_us", 0.0)) * 1e-6


def peak_for(target: Target, precision: str) -> float:
    """Peak ops/s the node runs at; precisions without a fast path fall back to float."""
    peaks = target.peak_ops_per_s
    if peaks.get(precision, 0.0) > 0:
        return peaks[precision]
    return max(peaks.get("fp16", 0.0) if "fp16" in target.fast_precisions else 0.0,
               peaks.get("fp32", 0.0))


def node_time_s(node: NodeCost, target: Target) -> float:
    """Estimated seconds of one node on ``target`` (0 for nodes that launch nothing)."""
    if node.fused:
        return 0.0
    eff, launch = estimate_factors(target, node.precision)
    compute, memory = node_terms(node, target)
    return max(compute / eff, memory) + launch


def node_terms(node: NodeCost, target: Target) -> tuple[float, float]:
    """(compute seconds at full efficiency, memory seconds) of one node: the two sides of the
    roofline before the target's factors (what ``edgeprune targets fit`` refits)."""
    compute = node.macs * 2 / peak_for(target, node.precision)
    on_chip = target.on_chip_bytes
    acts = node.reads + node.writes
    off_chip = node.weight_bytes + sum(b for b in acts if b > on_chip)
    memory = (off_chip / target.bandwidth_bytes_per_s
              + sum(b for b in acts if b <= on_chip) / on_chip_bandwidth(target))
    return compute, memory


def on_chip_bandwidth(target: Target) -> float:
    """Bytes/s for tensors that fit on chip: ``[memory] on_chip_bandwidth_gbps`` when the target
    file has it, else the DRAM bandwidth (the conservative reading: every byte moved costs)."""
    mem = target.section("memory")
    return float(mem.get("on_chip_bandwidth_gbps", mem["bandwidth_gbps"])) * 1e9


def estimate_latency_ms(nodes: list[NodeCost], target: Target) -> tuple[float, list[float]]:
    """Total and per-node estimated latency in ms at batch 1."""
    per = [node_time_s(n, target) * 1e3 for n in nodes]
    return float(sum(per)), per
