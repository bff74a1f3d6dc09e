"""Seconds to score every unit of ResNet-56 on n CIFAR images (CPU), against the all-float64
reference of the same bound, and the largest difference between the two.

    .venv/bin/python benchmarks/mi_speed.py            # n = 2000, all 27 units
    .venv/bin/python benchmarks/mi_speed.py --n 500    # quicker
    .venv/bin/python benchmarks/mi_speed.py --reference-every 9   # reference on 3 units only

The capture (forward passes) is timed apart from the MI part; the CPU seconds of the MI part
(summed over threads) are printed too, since wall time on a shared machine depends on the load.
The fast path centres the features and forms the Gram products in float32 over column blocks
summed in float64; the reference runs the same code with float64 products
(``FLOAT32_MIN_WORK`` raised). Random weights are enough: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import time

import torch
from edgeprune import information
from edgeprune.information import MIConfig, mutual_information
from edgeprune.models import create_model
from edgeprune.units import capture_branch_outputs, list_units


def reference(feats, y) -> float:
    saved = information.FLOAT32_MIN_WORK
    information.FLOAT32_MIN_WORK = float("inf")
    try:
        return mutual_information(feats, y)
    finally:
        information.FLOAT32_MIN_WORK = saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--reference-every", type=int, default=1,
                    help="compare with the float64 reference on every k-th unit")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from _cifar import SUBSET
    from edgeprune.data import load_dataset

    data = load_dataset(f"npz:{SUBSET}")
    s = data.sample("train", args.n, seed=0)
    x, y = torch.from_numpy(data.normalize(s.x)), s.y
    model = create_model("resnet56").eval()
    units = list_units(model)
    print(f"{'unit':<10} {'dim':>6} {'capture s':>9} {'MI s':>7} {'float64 s':>9} "
          f"{'|diff| nats':>11}")
    mi_total = cap_total = ref_total = worst = cpu_total = 0.0
    for u in units:
        t0 = time.perf_counter()
        with torch.no_grad(), capture_branch_outputs(model, [u.index]) as store:
            for lo in range(0, len(x), 250):
                model(x[lo:lo + 250])
        feats = torch.cat(store[u.index])
        t1, c1 = time.perf_counter(), time.process_time()
        mi = mutual_information(feats, y, MIConfig())
        t2 = time.perf_counter()
        cpu_total += time.process_time() - c1
        cap_total += t1 - t0
        mi_total += t2 - t1
        ref = diff = ""
        if u.index % args.reference_every == 0:
            value = reference(feats, y)
            ref_s = time.perf_counter() - t2
            ref_total += ref_s
            worst = max(worst, abs(value - mi))
            ref, diff = f"{ref_s:9.2f}", f"{abs(value - mi):11.2e}"
        print(f"{u.name:<10} {feats.shape[1]:>6} {t1 - t0:9.2f} {t2 - t1:7.2f} {ref:>9} "
              f"{diff:>11}", flush=True)
    print(f"all {len(units)} units, n = {args.n}, {torch.get_num_threads()} threads: MI "
          f"{mi_total:.1f} s wall ({mi_total / len(units):.2f} s per unit; {cpu_total:.1f} CPU-s "
          f"over all threads), capture {cap_total:.1f} s; "
          f"float64 reference {ref_total:.1f} s on the compared units; largest |difference| "
          f"{worst:.2e} nats")


if __name__ == "__main__":
    main()
