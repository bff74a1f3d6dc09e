"""MSPIC against random and L1 at equal unit count, on the shared CIFAR-10 subset.

    .venv/bin/python benchmarks/prune_methods.py
    .venv/bin/python benchmarks/prune_methods.py --epochs 15 --stages 2 --finetune-epochs 2

Trains a ResNet-20 (or loads it from benchmarks/cache/), prunes it with mspic, then with random
and l1 removing exactly MSPIC's per-stage unit counts (``PruneConfig.counts``), fine-tunes each
identically (same epochs, lr, seed), and prints: method, units, params, MACs, validation accuracy
after removal (before fine-tuning) and after fine-tuning, and test accuracy at the end (test is
only reported, never used for a decision). Outputs go to benchmarks/out/prune_<method>/.
"""

from __future__ import annotations

import argparse

from _cifar import OUT, trained
from edgeprune.prune import PruneConfig, prune_model
from edgeprune.train import evaluate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=15, help="training epochs of the base model")
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--epsilon", type=float, default=0.05)
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    loaded, data = trained("resnet20", args.epochs)
    base = {"stages": args.stages, "finetune_epochs": args.finetune_epochs, "samples": args.samples,
                "max_error_increase": args.epsilon, "seed": 0}
    rows = []
    mspic = prune_model(loaded, data, PruneConfig(**base), OUT / "prune_mspic")
    counts = [len(st["removed"]) for st in mspic.record["stages"] if st["removed"]]
    rows.append(("mspic", mspic, loaded))
    for method in ("random", "l1"):
        if not counts:
            break
        cfg = PruneConfig(**{**base, "stages": len(counts)}, method=method, counts=counts)
        rows.append((method, prune_model(loaded, data, cfg, OUT / f"prune_{method}"), loaded))
    print(f"base: {len(mspic.record['units'])} units, val accuracy "
          f"{mspic.summary['val_accuracy_before']:.3f}, test "
          f"{evaluate(loaded.model, data, 'test').accuracy:.3f}; MSPIC counts per stage {counts}")
    print(f"{'method':<7} {'units':>5} {'params':>9} {'MACs':>11} {'val removed':>11} "
          f"{'val tuned':>9} {'test':>6}")
    for method, r, _ in rows:
        s = r.summary
        removed = [st.get("val_error_removed") for st in r.record["stages"] if st["removed"]]
        val_removed = f"{1 - removed[-1]:.3f}" if removed else "-"
        test = evaluate(r.loaded.model, data, "test").accuracy
        print(f"{method:<7} {s['units_after']:>5} {s['params_after']:>9,} {s['macs_after']:>11,} "
              f"{val_removed:>11} {s['val_accuracy_after']:>9.3f} {test:>6.3f}")


if __name__ == "__main__":
    main()
