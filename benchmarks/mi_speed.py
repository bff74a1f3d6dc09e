"""Seconds per unit to score every unit of ResNet-56 on n CIFAR images (CPU), and the ratio to
the plain numpy implementation of the same bound (explicit pairwise differences).

    .venv/bin/python benchmarks/mi_speed.py            # n = 2000, all 27 units
    .venv/bin/python benchmarks/mi_speed.py --n 500    # quicker

Random weights are enough: the cost does not depend on them. The numpy reference is timed on
one unit per stage (it needs n²·d memory, so it runs on row blocks of 50).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from edgeprune.information import MIConfig, mutual_information, scale_features
from edgeprune.models import create_model
from edgeprune.units import capture_branch_outputs, list_units
from scipy.special import logsumexp


def numpy_bound(x: np.ndarray, y: np.ndarray, sigma2: float) -> float:
    n = len(x)
    d = np.empty((n, n))
    for lo in range(0, n, 50):
        d[lo:lo + 50] = ((x[lo:lo + 50, None, :] - x[None, :, :]) ** 2).sum(-1)
    h_t = -np.mean(logsumexp(-d / (2 * sigma2), axis=1) - np.log(n))
    h_ty = 0.0
    for k in np.unique(y):
        i = np.flatnonzero(y == k)
        h_ty += len(i) / n * -np.mean(logsumexp(-d[np.ix_(i, i)] / (8 * sigma2), axis=1)
                                      - np.log(len(i)))
    return float(h_t - h_ty)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    torch.manual_seed(0)
    from _cifar import SUBSET
    from edgeprune.data import load_dataset

    data = load_dataset(f"npz:{SUBSET}")
    s = data.sample("train", args.n, seed=0)
    x, y = torch.from_numpy(data.normalize(s.x)), s.y
    model = create_model("resnet56").eval()
    units = list_units(model)
    print(f"{'unit':<10} {'dim':>6} {'capture s':>9} {'MI s':>7} {'numpy s':>8} {'ratio':>6}")
    total = 0.0
    for u in units:
        t0 = time.perf_counter()
        with torch.no_grad(), capture_branch_outputs(model, [u.index]) as store:
            for lo in range(0, len(x), 250):
                model(x[lo:lo + 250])
        feats = torch.cat(store[u.index])
        t1 = time.perf_counter()
        mi = mutual_information(feats, y)
        t2 = time.perf_counter()
        total += t2 - t0
        ref = ratio = ""
        if u.index % 9 == 0:  # one unit per stage for the slow reference
            xs = scale_features(feats, "median").numpy()
            t3 = time.perf_counter()
            value = numpy_bound(xs, y, MIConfig().effective_sigma2)
            ref_s = time.perf_counter() - t3
            assert abs(value - mi) < 1e-8, (value, mi)
            ref, ratio = f"{ref_s:8.2f}", f"{ref_s / (t2 - t1):6.1f}"
        print(f"{u.name:<10} {feats.shape[1]:>6} {t1 - t0:9.2f} {t2 - t1:7.2f} {ref:>8} {ratio:>6}")
    print(f"all {len(units)} units: {total:.1f} s ({total / len(units):.2f} s per unit, "
          f"n = {args.n}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
