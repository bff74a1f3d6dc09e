"""Realised against predicted speed-up of pruned models on the host (ONNX Runtime CPU, batch 1).

For ResNet-20 and ResNet-56 (CIFAR, 3×32×32, random weights: latency does not depend on their
values), this removes sets of skip-units of several sizes (the sets MSPIC's objective would
weigh: the deepest k, the earliest k, and k spread evenly over the stages), exports each model,
and prints the speed-up each predicts (the MAC ratio, and the host-cpu target's roofline
estimate, the figure `--objective` and `--precision auto` trust) beside the speed-up measured.
All models of one architecture are timed in the same run, round-robin (``--rounds`` rounds of
``--runs`` inferences each, median of the round medians), so a change in machine load hits
every model alike and the ratio stays meaningful.

    PYTHONPATH=toolchain .venv/bin/python benchmarks/realised_speedup.py
    PYTHONPATH=toolchain .venv/bin/python benchmarks/realised_speedup.py --arch resnet56 --rounds 60
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from edgeprune.complexity import model_complexity
from edgeprune.export import export_onnx
from edgeprune.models import create_model
from edgeprune.profile import account
from edgeprune.profile.latency import estimate_latency_ms
from edgeprune.prune.evaluate import removed_model
from edgeprune.targets import load_target
from edgeprune.units import list_units

SHAPE = (3, 32, 32)


def removal_sets(units, fractions=(0.25, 0.5, 0.75)) -> dict[str, list[int]]:
    """Name → positions: for each fraction f, the deepest, earliest and evenly spread ⌊f·m⌋."""
    m = len(units)
    out = {"original": []}
    for f in fractions:
        k = max(1, int(f * m))
        out[f"deepest {k}"] = list(range(m - k, m))
        out[f"earliest {k}"] = list(range(k))
        out[f"spread {k}"] = sorted({round(i * (m - 1) / max(k - 1, 1)) for i in range(k)})
    return out


def time_round_robin(paths: dict[str, Path], rounds: int, runs: int, threads: int) -> dict:
    """Median ms per model: one ORT session each, warmed up, then ``rounds`` rounds in which
    every model runs ``runs`` times in turn (median of the round medians)."""
    import time

    from edgeprune.export import ort_session

    x = np.random.default_rng(0).standard_normal((1, *SHAPE)).astype(np.float32)
    sessions = {name: ort_session(path, threads) for name, path in paths.items()}
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    for name, s in sessions.items():
        for _ in range(10):
            s.run(None, feeds[name])
    medians: dict[str, list[float]] = {name: [] for name in paths}
    names = list(sessions)
    for r in range(rounds):  # each round starts at another model: no model is always first
        for name in names[r % len(names):] + names[:r % len(names)]:
            s = sessions[name]
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feeds[name])
                times.append(time.perf_counter() - t0)
            medians[name].append(1e3 * float(np.median(times)))
    return {name: float(np.median(v)) for name, v in medians.items()}


def run(arch: str, rounds: int, runs: int, threads: int, workdir: Path) -> list[str]:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, in_channels=3).eval()
    units = list_units(model)
    target = load_target("host-cpu")
    paths, info = {}, {}
    for name, removed in removal_sets(units).items():
        pruned = removed_model(model, removed) if removed else model
        path = workdir / f"{arch}-{name.replace(' ', '-')}.onnx"
        export_onnx(pruned, SHAPE, path)
        est, _ = estimate_latency_ms(account(onnx.load(str(path))).nodes, target)
        paths[name] = path
        info[name] = (len(removed), model_complexity(pruned, SHAPE).macs, est)
    measured = time_round_robin(paths, rounds, runs, threads)
    _, macs0, est0 = info["original"]
    lines = [f"{arch}: {len(units)} units; host ONNX Runtime, {threads} threads, batch 1, "
             f"median of {rounds} round-robin rounds of {runs} runs", "",
             "| removed | units | MACs | MAC ratio | est. speed-up (host-cpu roofline) | "
             "measured ms | measured speed-up | measured / estimated |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (k, macs, est) in info.items():
        real, pred = measured["original"] / measured[name], est0 / est
        lines.append(f"| {name} | {len(units) - k} | {macs / 1e6:.1f} M | {macs0 / macs:.2f} | "
                     f"{pred:.2f} | {measured[name]:.3f} | {real:.2f} | {real / pred:.2f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet20,resnet56")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch.split(","):
            print("\n".join(run(arch, args.rounds, args.runs, args.threads, Path(tmp))) + "\n",
                  flush=True)


if __name__ == "__main__":
    main()
