"""Depth, width and storage on one model: MSPIC (skip-units), MINT (filters), MSPIC then MINT,
and Deep Compression (weight sharing + Huffman), each from the same trained checkpoint, with
params, MACs, file sizes and test accuracy.

    # the model comes from criteria.py's cache (trained there if missing)
    python benchmarks/compress_table.py --data npz:/work/shared/data/cifar10-subset.npz \
        --arch resnet56 --seed 0 --epochs 15 --finetune-epochs 2

Every decision (MI sample, GMI sample, ε) uses the training and validation splits; accuracy is
on the test split. ``mspic+mint`` is MINT applied to the MSPIC result (what ``--method
mspic+mint`` does, without running MSPIC twice). Results are appended to
benchmarks/out/compress_<tag>.jsonl, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from criteria import CACHE, data_tag, trained

OUT = Path(__file__).resolve().parent / "out"


def measure(loaded, data, path: Path | None) -> dict:
    from edgeprune.complexity import model_complexity
    from edgeprune.train import evaluate
    from edgeprune.units import list_units

    shape = tuple(loaded.info.input_shape)
    c = model_complexity(loaded.model, shape)
    return {"units": len(list_units(loaded.model)), "params": c.params, "macs": c.macs,
            "bytes": path.stat().st_size if path else None,
            "test_acc": evaluate(loaded.model, data, "test").accuracy}


def filters(start, data, cfg, out: Path) -> dict:
    """One MINT pass on ``start``, saved to out/pruned.pt, measured."""
    from edgeprune.checkpoint import save_checkpoint
    from edgeprune.prune.mint import prune_filters

    pruned, mint = prune_filters(start, data, cfg, out)
    path = save_checkpoint(out / "pruned.pt", pruned.model, pruned.info)
    return {**measure(pruned, data, path), "channels_removed": mint["channels_removed"]}


def deep_compression(model_path: Path, spec: str, out: Path, args) -> dict:
    from edgeprune.api import quantize_model

    r = quantize_model(model_path, "shared", out, target="host-cpu", data=spec,
                       config={"shared_bits": args.bits, "shared_epochs": args.finetune_epochs},
                       seed=args.seed)
    s = r.quantized.summary
    return {"storage_bytes": s["storage_bytes"], "test_acc": s["accuracy"],
            "bits": s["bits"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="npz:/work/shared/data/cifar10-subset.npz")
    ap.add_argument("--arch", default="resnet56")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--epsilon", type=float, default=0.1, help="MSPIC ε per stage")
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--mint-percentile", type=float, default=90.0)
    ap.add_argument("--bits", type=int, default=5, help="Deep Compression bits per weight")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from edgeprune.api import prune_model
    from edgeprune.prune import PruneConfig

    tag = f"{args.arch}_{data_tag(args.data)}_s{args.seed}_e{args.epochs}_ft{args.finetune_epochs}"
    work = CACHE / "compress" / tag
    log = OUT / f"compress_{tag}.jsonl"
    done = {}
    if log.is_file():
        done = {r["variant"]: r for r in map(json.loads, log.read_text().splitlines())}

    def record(name: str, row: dict, t0: float) -> None:
        row.update(variant=name, seconds=round(time.perf_counter() - t0, 1))
        done[name] = row
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    loaded, data = trained(args.data, args.arch, args.seed, args.epochs)
    from criteria import checkpoint_path

    original_path = checkpoint_path(args.data, args.arch, args.seed, args.epochs)
    cfg = PruneConfig(method="mspic", stages=args.stages, max_error_increase=args.epsilon,
                      finetune_epochs=args.finetune_epochs, seed=args.seed,
                      mint_percentile=args.mint_percentile)
    if "original" not in done:
        t0 = time.perf_counter()
        record("original", measure(loaded, data, original_path), t0)
    if "original-finetuned" not in done:  # the control: fine-tuning alone, no pruning
        import copy

        from edgeprune.checkpoint import LoadedModel
        from edgeprune.train import TrainConfig, train

        t0 = time.perf_counter()
        model = copy.deepcopy(loaded.model)
        train(model, data, TrainConfig(epochs=args.finetune_epochs * (args.stages + 1),
                                       lr=cfg.lr, seed=args.seed))
        model.cpu().eval()
        record("original-finetuned", measure(LoadedModel(model, loaded.info), data, None), t0)
    if "mspic" not in done or "mspic+mint" not in done:
        t0 = time.perf_counter()
        res = prune_model(loaded, data, work / "mspic", cfg)
        if "mspic" not in done:
            row = measure(res.loaded, data, res.path)
            row["removed_units"] = res.summary["removed_units"]
            record("mspic", row, t0)
        t0 = time.perf_counter()
        record("mspic+mint", filters(res.loaded, data, cfg, work / "mspic+mint"), t0)
    if "mint" not in done:
        t0 = time.perf_counter()
        record("mint", filters(loaded, data, replace(cfg, method="mint"), work / "mint"), t0)
    if "deep-compression" not in done:
        t0 = time.perf_counter()
        row = measure(loaded, data, original_path)
        row.update(deep_compression(original_path, args.data, work / "dc", args))
        record("deep-compression", row, t0)
    if "mspic+mint+dc" not in done:
        t0 = time.perf_counter()
        path = work / "mspic+mint" / "pruned.pt"
        from edgeprune.checkpoint import load_model

        both = load_model(path)
        row = measure(both, data, path)
        row.update(deep_compression(path, args.data, work / "dc2", args))
        record("mspic+mint+dc", row, t0)
    print_table(done, args)


def print_table(done: dict, args) -> None:
    base = done["original"]
    print(f"\n{args.arch} on {data_tag(args.data)}, trained {args.epochs} epochs (seed "
          f"{args.seed}); fine-tuning {args.finetune_epochs} epoch(s) per step (lr 0.01); MSPIC "
          f"ε {args.epsilon} × {args.stages} stages; MINT percentile {args.mint_percentile}; "
          f"Deep Compression {args.bits} bits; original-finetuned: the unpruned model "
          f"fine-tuned as long as the longest pipeline "
          f"({args.finetune_epochs * (args.stages + 1)} epochs)\n")
    print("| variant | units | params | MACs | checkpoint bytes | packed bytes | "
          "test acc. |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ("original", "original-finetuned", "mspic", "mint", "mspic+mint",
                 "deep-compression", "mspic+mint+dc"):
        r = done.get(name)
        if r is None:
            continue
        packed = r.get("storage_bytes", {}).get("shared_huffman")
        print(f"| {name} | {r['units']} | {r['params']:,} ({r['params'] / base['params']:.0%})"
              f" | {r['macs'] / 1e6:.1f} M ({r['macs'] / base['macs']:.0%}) | "
              f"{r['bytes'] or 0:,} | {f'{packed:,}' if packed else '-'} | "
              f"{100 * r['test_acc']:.2f}% |")


if __name__ == "__main__":
    main()
