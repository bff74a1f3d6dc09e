"""MINT against L1-norm filter pruning on digits ResNet-20: the percentile of each removal set
among random removal sets of the same per-layer sizes (gated test accuracy, no fine-tuning; 0.5
is chance), then the same removals fine-tuned, with params, MACs and file size; and Deep
Compression (precision shared) of the unpruned model.

    # models: benchmarks/criteria.py train --data digits --seeds 0-4 --epochs 15
    python benchmarks/mint_criteria.py --seeds 0-2 --percentile 90 --draws 20 --finetune 3
    # paired: also fine-tune 10 of the random sets identically, per seed, and report
    # MINT − mean(random) and L1 − mean(random) with a 95% interval over seeds
    python benchmarks/mint_criteria.py --seeds 0-4 --paired 10 --finetune 3

MINT decides on training images; every accuracy below is on the test split, which it never sees.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out"


def l1_plan(model, groups, counts: dict[str, int]) -> dict[str, list[int]]:
    """Per group the channels whose producing filters have the smallest summed L1 norm."""
    modules = dict(model.named_modules())
    plan = {}
    for g in groups:
        norms = sum(modules[p].weight.detach().abs().flatten(1).sum(1) for p in g.producers)
        plan[g.root] = sorted(np.argsort(norms.numpy(), kind="stable")[:counts[g.root]].tolist())
    return plan


def random_plan(groups, counts, rng) -> dict[str, list[int]]:
    return {g.root: sorted(rng.choice(g.channels, counts[g.root], replace=False).tolist())
            for g in groups}


def gated_accuracy(model, plan, shape, data) -> float:
    from edgeprune.prune.channels import masked
    from edgeprune.train import evaluate

    return evaluate(masked(model, plan, shape), data, "test").accuracy


def finetuned(model, plan, shape, data, epochs, seed, tmp: Path) -> dict:
    from edgeprune.checkpoint import save_checkpoint
    from edgeprune.complexity import model_complexity
    from edgeprune.prune.channels import remove_channels
    from edgeprune.train import TrainConfig, evaluate, train

    m = remove_channels(copy.deepcopy(model.model), plan, shape)
    if epochs:
        train(m, data, TrainConfig(epochs=epochs, lr=0.01, seed=seed))
    m.cpu().eval()
    c = model_complexity(m, shape)
    info = copy.deepcopy(model.info)
    info.channels_pruned = True
    size = save_checkpoint(tmp, m, info).stat().st_size
    return {"params": c.params, "macs": c.macs, "bytes": size,
            "test_acc": evaluate(m, data, "test").accuracy}


def run_seed(seed: int, args) -> dict:
    from edgeprune.checkpoint import data_for_model, load_model
    from edgeprune.complexity import model_complexity
    from edgeprune.data import load_dataset
    from edgeprune.prune.channels import channel_groups
    from edgeprune.prune.mint import MintConfig, mint_plan

    path = Path(args.cache) / f"resnet20_digits_s{seed}_e15.pt"
    loaded = load_model(path)
    data = data_for_model(loaded, load_dataset("digits"))
    shape = tuple(loaded.info.input_shape)
    model = loaded.model
    groups = channel_groups(model, shape)
    s = data.sample("train", args.samples, seed=seed)
    t = time.time()
    plan, _ = mint_plan(model, torch.from_numpy(data.normalize(s.x)), shape,
                        MintConfig(percentile=args.percentile, samples=args.samples, seed=seed))
    mint_s = time.time() - t
    counts = {g.root: len(plan[g.root]) for g in groups}
    plans = {"mint": plan, "l1": l1_plan(model, groups, counts)}
    rng = np.random.default_rng(seed)
    rand = [gated_accuracy(model, random_plan(groups, counts, rng), shape, data)
            for _ in range(args.draws)]
    row = {"seed": seed, "removed": sum(counts.values()), "mint_seconds": round(mint_s, 1),
           "random_mean": float(np.mean(rand))}
    tmp = OUT / f"mint_tmp_{seed}.pt"
    c = model_complexity(model, shape)
    row["original"] = {"params": c.params, "macs": c.macs, "bytes": path.stat().st_size,
                       "test_acc": float(_acc(model, data))}
    for name, p in plans.items():
        acc = gated_accuracy(model, p, shape, data)
        row[name] = {"gated_acc": acc, "percentile": (sum(r < acc for r in rand)
                                                     + 0.5 * sum(r == acc for r in rand))
                     / len(rand)}
        row[name].update(finetuned(loaded, p, shape, data, args.finetune, seed, tmp))
    if args.paired:  # the same random sets' first ``paired``, fine-tuned identically
        rng = np.random.default_rng(seed)
        plans_r = [random_plan(groups, counts, rng) for _ in range(args.draws)]
        row["random_finetuned"] = [
            finetuned(loaded, p, shape, data, args.finetune, seed, tmp)["test_acc"]
            for p in plans_r[:args.paired]]
    tmp.unlink(missing_ok=True)
    return row


def _acc(model, data) -> float:
    from edgeprune.train import evaluate

    return evaluate(model, data, "test").accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--percentile", type=float, default=90)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--finetune", type=int, default=3)
    ap.add_argument("--paired", type=int, default=0,
                    help="fine-tune this many of the random sets too (paired comparison)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/work/cache/mspic/models")
    args = ap.parse_args()
    a, _, b = args.seeds.partition("-")
    seeds = list(range(int(a), int(b or a) + 1))
    torch.set_num_threads(args.threads)
    OUT.mkdir(exist_ok=True)
    rows = []
    for seed in seeds:
        rows.append(run_seed(seed, args))
        print(json.dumps(rows[-1]), flush=True)
    (OUT / "mint_criteria.json").write_text(json.dumps(rows, indent=1))
    for name in ("mint", "l1"):
        pct = [r[name]["percentile"] for r in rows]
        acc = [r[name]["test_acc"] for r in rows]
        print(f"{name}: percentile {np.mean(pct):.2f} (per seed {pct}); fine-tuned test "
              f"accuracy {np.mean(acc):.4f}; params {rows[0][name]['params']}")
    if args.paired:
        paired_table(rows)


def paired_table(rows: list[dict]) -> None:
    from edgeprune.prune.evaluate import t_interval

    print("\n| seed | filters removed | MINT | L1 | random mean ± sd (n) | MINT − random | "
          "L1 − random |\n|---:|---:|---:|---:|---:|---:|---:|")
    diffs = {"mint": [], "l1": []}
    for r in rows:
        rand = 100 * np.asarray(r["random_finetuned"])
        for name in diffs:
            diffs[name].append(100 * r[name]["test_acc"] - rand.mean())
        print(f"| {r['seed']} | {r['removed']} | {100 * r['mint']['test_acc']:.2f} | "
              f"{100 * r['l1']['test_acc']:.2f} | {rand.mean():.2f} ± {rand.std(ddof=1):.2f} "
              f"({len(rand)}) | {diffs['mint'][-1]:+.2f} | {diffs['l1'][-1]:+.2f} |")
    for name, d in diffs.items():
        m, hw = t_interval(d)
        print(f"{name} minus the random mean over {len(d)} seeds: {m:+.2f} points, 95% CI "
              f"[{m - hw:+.2f}, {m + hw:+.2f}]")


if __name__ == "__main__":
    main()
