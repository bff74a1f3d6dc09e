"""Skip-units found on the traced graph per architecture, and what discovery and removal cost.

    PYTHONPATH=toolchain .venv/bin/python benchmarks/graph_units.py             # all of them
    PYTHONPATH=toolchain .venv/bin/python benchmarks/graph_units.py resnet18    # some

For each architecture of tests/graph_models.py (random seeded weights, 10 classes, the tests'
input sizes): units by kind, seconds to trace and discover (trace includes shape propagation),
seconds to remove the two units the tests remove (one at a time, each re-discovering the units),
and the parameter and MAC drop. One intra-op thread, as in the tests; the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from edgeprune.complexity import model_complexity
from edgeprune.graphunits import list_units, remove_units, trace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from graph_models import ARCHS, build


def measure(arch) -> dict:
    shape = (3, arch.size, arch.size)
    model = build(arch.name, arch.size)
    t0 = time.perf_counter()
    gm = trace(model, shape)
    units = list_units(gm)
    t1 = time.perf_counter()
    names = [units[i].name for i in arch.remove]
    before = model_complexity(gm, shape)
    t2 = time.perf_counter()
    remove_units(gm, names)
    t3 = time.perf_counter()
    after = model_complexity(gm, shape)
    return {"units": len(units), "kinds": Counter(u.kind for u in units), "discover": t1 - t0,
            "remove": t3 - t2, "params": 1 - after.params / before.params,
            "macs": 1 - after.macs / before.macs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| architecture | input | units | kinds | trace + discover (s) | remove 2 (s) "
          "| params −% | MACs −% |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in ARCHS:
        if args.names and arch.name not in args.names:
            continue
        runs = [measure(arch) for _ in range(args.repeat)]
        r = runs[0]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(r["kinds"].items()))
        disc = statistics.median(x["discover"] for x in runs)
        rem = statistics.median(x["remove"] for x in runs)
        print(f"| {arch.name} | {arch.size}² | {r['units']} | {kinds} | {disc:.2f} | {rem:.2f} "
              f"| {100 * r['params']:.1f} | {100 * r['macs']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
