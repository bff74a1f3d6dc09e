"""Estimated vs measured latency on the host (ONNX Runtime CPU, batch 1), per model.

For ResNet-20, ResNet-56 and DenseNet-BC-100 (CIFAR, 3×32×32, random weights: latency does not
depend on their values) at fp32 and int8, this exports the ONNX model, makes the int8 model with
ONNX Runtime's quantize_static (QDQ, per-channel symmetric int8 weights, uint8 activations: the
u8s8 flavour ORT's x86 kernels run fast), measures the median latency with ORT, estimates it with
the host-cpu target file, and prints the error per model.

    .venv/bin/python benchmarks/latency_estimate.py              # the table
    .venv/bin/python benchmarks/latency_estimate.py --calibrate  # also fit [estimate] factors

``--calibrate`` measures ``launch_overhead_us`` (ORT's cost per kernel, on a chain of 200
tiny Adds), then fits ``efficiency`` and ``[memory] on_chip_bandwidth_gbps`` to the fp32 models
by a grid search minimising the squared log error, then ``efficiency_int8`` to the int8 models
with the others held, and prints the values for targets/host-cpu.toml. The fit uses
these same models, so the errors printed afterwards measure how well the roofline explains
them, not how it generalises.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
from edgeprune.export import export_onnx
from edgeprune.models import create_model
from edgeprune.profile import account, measure_host
from edgeprune.profile.latency import estimate_latency_ms
from edgeprune.targets import Target, load_target

MODELS = ("resnet20", "resnet56", "densenet_bc100")
SHAPE = (3, 32, 32)


def make_models(workdir: Path) -> list[tuple[str, str, Path]]:
    import torch

    torch.manual_seed(0)
    out = []
    for arch in MODELS:
        fp32 = workdir / f"{arch}.onnx"
        if not fp32.exists():
            export_onnx(create_model(arch, num_classes=10, in_channels=3), SHAPE, fp32)
        int8 = workdir / f"{arch}.int8.onnx"
        if not int8.exists():
            quantize_int8(fp32, int8)
        out += [(arch, "fp32", fp32), (arch, "int8", int8)]
    return out


def quantize_int8(src: Path, dst: Path, samples: int = 16) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.data = iter([{"input": rng.standard_normal((1, *SHAPE)).astype(np.float32)}
                              for _ in range(samples)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)


def with_estimate(target: Target, memory: dict | None = None, **factors) -> Target:
    raw = dict(target.raw) | {"estimate": dict(target.section("estimate")) | factors}
    if memory:
        raw["memory"] = dict(target.section("memory")) | memory
    return dataclasses.replace(target, raw=raw)


def measure_launch_overhead_us(nodes: int = 200, threads: int | None = None) -> float:
    """ORT's cost per kernel: a chain of ``nodes`` Adds on a 16-element tensor, timed, divided
    by ``nodes`` (the arithmetic and data are negligible at that size)."""
    import onnx
    from onnx import TensorProto, helper

    one = helper.make_tensor("one", TensorProto.FLOAT, [1, 16], [1.0] * 16)
    chain = [helper.make_node("Add", [f"t{i}", "one"], [f"t{i + 1}"]) for i in range(nodes)]
    graph = helper.make_graph(
        chain, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info(f"t{nodes}", TensorProto.FLOAT, [1, 16])], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.onnx"
        onnx.save(model, str(path))
        host = measure_host(path, threads=threads, warmup_s=0.5, runs=300, max_s=5.0)
    return host["median"] * 1e3 / nodes


def calibrate(rows, target: Target, threads: int | None) -> Target:
    """Launch overhead measured on a chain of tiny kernels; then efficiency and on-chip
    bandwidth by a grid search minimising the squared log error on the fp32 models, then
    efficiency_int8 on the int8 models with the others held."""

    def loss(t: Target, prec: str) -> float:
        return sum(np.log(estimate_latency_ms(r["acc"].nodes, t)[0] / r["measured_ms"]) ** 2
                   for r in rows if r["precision"] == prec)

    launch = round(measure_launch_overhead_us(threads=threads), 2)
    grid = [(e, bw) for e in np.geomspace(0.05, 1.0, 40) for bw in np.geomspace(5, 400, 40)]
    best = min(grid, key=lambda g: loss(with_estimate(
        target, {"on_chip_bandwidth_gbps": g[1]}, efficiency=g[0], launch_overhead_us=launch),
        "fp32"))
    target = with_estimate(target, {"on_chip_bandwidth_gbps": round(float(best[1]), 1)},
                           efficiency=round(float(best[0]), 3), launch_overhead_us=launch)
    eff8 = min(np.geomspace(0.02, 1.0, 60),
               key=lambda e: loss(with_estimate(target, efficiency_int8=float(e)), "int8"))
    target = with_estimate(target, efficiency_int8=round(float(eff8), 3))
    print("\nfitted for targets/host-cpu.toml:")
    print(f"[memory] on_chip_bandwidth_gbps = {target.section('memory')['on_chip_bandwidth_gbps']}")
    for k in ("efficiency", "efficiency_int8", "launch_overhead_us"):
        print(f"[estimate] {k} = {target.section('estimate')[k]}")
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workdir", type=Path, default=None, help="keep the ONNX models here")
    args = ap.parse_args()
    import logging

    import onnx

    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's pre-processing advice

    target = load_target("host-cpu")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = []
        for arch, prec, path in make_models(workdir):
            host = measure_host(path, threads=args.threads, warmup_s=1.0, runs=300, max_s=15.0)
            acc = account(onnx.load(str(path)), prec)
            rows.append({"model": arch, "precision": prec, "path": path, "macs": acc.macs,
                         "measured_ms": host["median"], "p90_ms": host["p90"], "acc": acc,
                         "kernels": sum(not n.fused for n in acc.nodes)})
        if args.calibrate:
            target = calibrate(rows, target, args.threads)
        print(f"\nhost-cpu, ONNX Runtime CPU, batch 1, {args.threads} threads; [estimate] "
              f"{dict(target.section('estimate'))}, on-chip "
              f"{target.section('memory').get('on_chip_bandwidth_gbps')} GB/s\n")
        print("| model | precision | MACs (M) | kernels | measured median ms (p90) | "
              "estimated ms | error |")
        print("|---|---|---|---|---|---|---|")
        errors = []
        for r in rows:
            est, _ = estimate_latency_ms(r["acc"].nodes, target)
            err = (est - r["measured_ms"]) / r["measured_ms"]
            errors.append(abs(err))
            print(f"| {r['model']} | {r['precision']} | {r['macs'] / 1e6:.1f} | {r['kernels']} | "
                  f"{r['measured_ms']:.3f} ({r['p90_ms']:.3f}) | {est:.3f} | {100 * err:+.1f}% |")
        print(f"\nmean |error| {100 * np.mean(errors):.1f}%, max {100 * np.max(errors):.1f}%")


if __name__ == "__main__":
    main()
