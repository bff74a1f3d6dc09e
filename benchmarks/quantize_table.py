"""Precision table for one model: file size, ONNX Runtime CPU latency and accuracy per precision.

Trains the model (seeded) unless --model is given, then makes fp32, fp16, int8 in both flavours
(tensorrt: s8 symmetric QDQ; ort-cpu: u8 activations / s8 weights) and binary weights with
``edgeprune.quantize.quantize_model``, and measures each ONNX file with ONNX Runtime on this CPU:
batch 1, a fixed thread count, median of --runs timed runs after --warmup untimed ones. The
latency is the host CPU's: the tensorrt int8 flavour is slower than fp32 here and fast on a
Jetson with int8 tensor cores, and fp16 is emulated here, so read this table for sizes and
accuracy, and for the CPU latency of the ort-cpu flavour only.

    .venv/bin/python benchmarks/quantize_table.py                        # ResNet-20, digits
    .venv/bin/python benchmarks/quantize_table.py --arch resnet56 --epochs 8
    .venv/bin/python benchmarks/quantize_table.py --data npz:../shared/data/cifar10-subset.npz \
        --epochs 15
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from edgeprune.checkpoint import data_for_model, load_model
from edgeprune.data import load_dataset
from edgeprune.export import export_onnx, ort_session
from edgeprune.quantize import QuantizeConfig, quantize_model
from edgeprune.targets import load_target
from edgeprune.train import TrainConfig, train_from_scratch


def latency_ms(path: Path, shape: tuple[int, ...], threads: int, warmup: int, runs: int) -> float:
    sess = ort_session(path, threads)
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--model", type=Path, help="a checkpoint; default: train --arch")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--binary-epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset(args.data)
    if args.model:
        loaded = load_model(args.model)
    else:
        loaded = train_from_scratch(args.arch, data, TrainConfig(epochs=args.epochs, seed=0))
    data = data_for_model(loaded, data)
    shape = tuple(loaded.info.input_shape)
    cfg = QuantizeConfig(binary_epochs=args.binary_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(loaded.model, shape, tmp / "model.onnx")
        runs = [("fp32", "host-cpu", "fp32"), ("fp16", "jetson-nano", "fp16"),
                ("int8", "jetson-nano", "int8 tensorrt"), ("int8", "host-cpu", "int8 ort-cpu"),
                ("binary", "host-cpu", "binary")]
        rows = []
        for precision, target, label in runs:
            r = quantize_model(loaded, tmp / "model.onnx", data, precision, load_target(target),
                               tmp / label.replace(" ", "-"), cfg)
            size = r.onnx_path.stat().st_size
            packed = r.summary.get("packed", {}).get("bytes")
            ms = latency_ms(r.onnx_path, shape, args.threads, args.warmup, args.runs)
            rows.append((label, size, packed, ms, r.accuracy, r.fp32_accuracy))

    print(f"\n{args.arch} on {args.data}: ONNX Runtime CPU, batch 1, {args.threads} threads, "
          f"median of {args.runs} runs after {args.warmup} warm-up; accuracy on the test split")
    print("| precision | ONNX file (KiB) | stored weights (KiB) | CPU latency (ms) | accuracy |")
    print("|---|---:|---:|---:|---:|")
    for label, size, packed, ms, acc, _fp32 in rows:
        stored = f"{packed / 1024:.1f} (packed 1-bit)" if packed else f"{size / 1024:.1f}"
        print(f"| {label} | {size / 1024:.1f} | {stored} | {ms:.3f} | {acc:.2%} |")
    print(f"(fp32 accuracy {rows[0][5]:.2%}; the tensorrt int8 file keeps float weights with "
          "Q/DQ pairs: TensorRT stores them as int8 in the engine)")


if __name__ == "__main__":
    main()
