"""Evidence for a pruning criterion: percentile of its removal set, and a paired fine-tuned
comparison against random draws of the same size and stage composition, over several seeds.

    # train (cached under $EDGEPRUNE_CRITERIA_CACHE, default /work/cache/mspic)
    python benchmarks/criteria.py train --data digits --seeds 0-4 --epochs 15
    # percentile table (gated test accuracy, no fine-tuning; 0.5 = chance)
    python benchmarks/criteria.py percentile --data digits --seeds 0-4 --epochs 15 --k 3
    # paired fine-tuned comparison: criterion vs >= 10 random draws, identical fine-tuning
    python benchmarks/criteria.py paired --data npz:CIFAR --seeds 0-4 --epochs 20 --k 3

Decisions (MI sample, policy choice, best-of-N) use the training and validation splits; the
score of a removal set is its gated *test* accuracy, which no criterion sees.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

CACHE = Path(os.environ.get("EDGEPRUNE_CRITERIA_CACHE", "/work/cache/mspic"))
OUT = Path(__file__).resolve().parent / "out"


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def data_tag(spec: str) -> str:
    return "digits" if spec == "digits" else Path(spec.split(":", 1)[1]).stem


# Warm-up epochs per architecture: ResNet-56 at lr 0.1 from the first step did not learn on
# the CIFAR subset (19% train accuracy after 15 epochs); the shallower nets train without.
WARMUP = {"resnet56": 2, "resnet110": 2}


def checkpoint_path(spec: str, arch: str, seed: int, epochs: int) -> Path:
    warm = f"_w{WARMUP[arch]}" if arch in WARMUP else ""
    return CACHE / "models" / f"{arch}_{data_tag(spec)}_s{seed}_e{epochs}{warm}.pt"


def trained(spec: str, arch: str, seed: int, epochs: int):
    """(LoadedModel, Dataset) trained from seed ``seed`` for ``epochs`` epochs, cached."""
    from edgeprune.checkpoint import data_for_model, load_model, save_checkpoint
    from edgeprune.data import load_dataset
    from edgeprune.train import TrainConfig, train_from_scratch

    data = load_dataset(spec)
    path = checkpoint_path(spec, arch, seed, epochs)
    if not path.is_file():
        t0 = time.perf_counter()
        new = train_from_scratch(arch, data, TrainConfig(epochs=epochs, seed=seed,
                                                                warmup_epochs=WARMUP.get(arch, 0)))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, new.model, new.info)
        print(f"trained {path.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    loaded = load_model(path)
    return loaded, data_for_model(loaded, data)


def cmd_train(args) -> None:
    from edgeprune.train import evaluate

    for seed in parse_seeds(args.seeds):
        loaded, data = trained(args.data, args.arch, seed, args.epochs)
        print(f"seed {seed}: test accuracy {evaluate(loaded.model, data, 'test').accuracy:.4f}",
              flush=True)


# ---------------------------------------------------------------- criteria

EPSILON = 0.02
RESOLUTIONS = [0.02, 0.05, 0.1, 0.2, 0.3]
KMEANS_MAX_K = 120
SCORE_NAMES = {"mi": "mi", "shuf": "mi-shuffle", "cond": "conditional"}
STABLE_DRAWS = 10


def mspic_variants() -> dict[str, dict]:
    """PruneConfig overrides of every MSPIC variant the harness measures ("default" is
    whatever PruneConfig() defaults to; "paper" the published procedure)."""
    out = {"paper": {"variant": "paper"}, "default": {},
           "default-units": {"objective": "units"},
           # the default, choosing only among policies that recur in ≥ half of 10 bootstrap
           # draws of the MI sample
           "default-stable": {"stable_clusters": STABLE_DRAWS}}
    for clustering in ("bins", "kmeans"):
        for s, score in SCORE_NAMES.items():
            for keep in ("first", "score", "cost"):
                name = f"mspic-{s}-{keep}" + ("-km" if clustering == "kmeans" else "")
                out[name] = {"score": score, "keep": keep, "clustering": clustering,
                             "scaling": "median", "sigma2": None}
                if clustering == "kmeans":  # every k: a policy for every count of removals
                    out[name]["ks"] = list(range(1, KMEANS_MAX_K))
    return out


class SeedState:
    """One trained model's MI terms (computed once, every score derived from them) and gated
    validation errors (shared by every variant)."""

    def __init__(self, model, data, seed: int, shuffles: int = 8):
        from edgeprune.information import MIConfig, unit_terms
        from edgeprune.prune import PruneConfig
        from edgeprune.prune.mspic import mi_sample
        from edgeprune.units import list_units

        self.model, self.data, self.seed = model, data, seed
        self.x, self.y = mi_sample(data, PruneConfig(seed=seed))
        idx = range(len(list_units(model)))
        t0 = time.perf_counter()
        self.terms = unit_terms(model, self.x, self.y, idx, MIConfig(shuffle_seed=seed),
                                shuffles=shuffles)
        self.paper_terms = unit_terms(model, self.x, self.y, idx, MIConfig(scaling="none"),
                                      shuffles=0)
        self.mi_seconds = time.perf_counter() - t0
        self.errors: dict = {}

    def scores(self, cfg) -> dict[int, float]:
        from edgeprune.information import score_from_terms

        terms = self.paper_terms if cfg.scaling == "none" else self.terms
        return {i: score_from_terms(t, cfg.score) for i, t in terms.items()}

    def select(self, overrides: dict, epsilon: float):
        """The set a variant's stage 0 removes, and its context."""
        from edgeprune.prune import PruneConfig
        from edgeprune.prune.methods import get_method
        from edgeprune.prune.mspic import stage_context

        cfg = PruneConfig(**{"max_error_increase": epsilon, "seed": self.seed, **overrides})
        cfg.validate()
        cfg = cfg.resolved()
        ctx = stage_context(0, self.model, self.data, cfg, self.x, self.y)
        if cfg.epsilon_mode == "absolute":
            # the paper's ε is an error level; give it the same budget as the others
            ctx.epsilon = ctx.base_error + epsilon
        ctx._mi, ctx._errors = self.scores(cfg), self.errors
        return sorted(get_method(cfg.method)(ctx).removed), ctx


def fixed_k_sets(model, data, k: int, seed: int, mi_ctx, n_best: int) -> dict[str, list[int]]:
    """Baselines removing exactly k units (``mi_ctx``: a stage context with MI scores)."""
    from edgeprune.prune.evaluate import GatedScorer
    from edgeprune.prune.methods import l1_norms

    units = mi_ctx.units
    m = len(units)
    mi = mi_ctx.mi()
    norms = l1_norms(mi_ctx.model, units)  # by unit index, as the l1 method ranks them
    costs = mi_ctx.single_costs()
    out = {
        "l1": sorted(sorted(range(m), key=lambda i: (norms[i], i))[:k]),
        "deepest": list(range(m - k, m)),
        "highest-mi": sorted(sorted(range(m), key=lambda i: (-mi[i], i))[:k]),
        "lowest-cost": sorted(sorted(range(m), key=lambda i: (costs[i], i))[:k]),
    }
    # best of N random draws of size k, chosen on validation (MSPIC's selection budget)
    rng = np.random.default_rng([seed, k, 7])
    val = GatedScorer(model, data, "val")
    draws = [tuple(sorted(int(i) for i in rng.choice(m, size=k, replace=False)))
             for _ in range(n_best)]
    out[f"best-of-{n_best}"] = list(max(draws, key=lambda s: (val.accuracy(s), -draws.index(s))))
    return out


def cmd_percentile(args) -> None:
    from edgeprune.prune.evaluate import GatedScorer

    epsilons = [float(e) for e in str(args.epsilon).split(",") if e]
    ks = [int(k) for k in str(args.k).split(",") if k and int(k) > 0]
    rows: dict[float, dict[str, list[dict]]] = {e: {} for e in epsilons}
    rows_k: dict[int, dict[str, list[dict]]] = {k: {} for k in ks}
    variants = mspic_variants()
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
    for seed in parse_seeds(args.seeds):
        loaded, data = trained(args.data, args.arch, seed, args.epochs)
        test = GatedScorer(loaded.model, data, "test")
        state = SeedState(loaded.model, data, seed)
        print(f"seed {seed}: MI terms of every unit in {state.mi_seconds:.1f} s", flush=True)
        for eps in epsilons:
            log = CACHE / (f"percentile_{data_tag(args.data)}_{args.arch}_e{args.epochs}"
                           f"_eps{eps}.jsonl")
            for r in _percentile_seed(state, test, variants, eps, args):
                rows[eps].setdefault(r["criterion"], []).append(r)
                _append(log, r)
        for k in ks:
            log = CACHE / (f"percentile_{data_tag(args.data)}_{args.arch}_e{args.epochs}"
                           f"_k{k}.jsonl")
            for r in _fixed_k_seed(state, test, k, args):
                rows_k[k].setdefault(r["criterion"], []).append(r)
                _append(log, r)
    for eps in epsilons:
        print(percentile_table(rows[eps], args, f"ε = {eps}") + "\n", flush=True)
    for k in ks:
        print(percentile_table(rows_k[k], args, f"k = {k} removed") + "\n", flush=True)


def _fixed_k_seed(state, test, k: int, args) -> list[dict]:
    """Every criterion removing exactly k units: MSPIC variants by their k-means policy with
    m − k clusters (their score and keep rule), and the baselines."""
    from edgeprune.prune.evaluate import set_percentile

    seed, units = state.seed, test.units
    sets = {}
    for s, score in SCORE_NAMES.items():
        for keep in ("first", "score", "cost"):
            sets[f"mspic-{s}-{keep}"], _ = state.select(
                {"score": score, "keep": keep, "counts": [k]}, 0.0)
    sets["paper-k"], _ = state.select({"variant": "paper", "counts": [k]}, 0.0)
    _, ctx = state.select({}, 0.0)
    sets.update(fixed_k_sets(state.model, state.data, k, seed, ctx, args.best_of))
    print(f"seed {seed} k={k}: " + ", ".join(f"{n} {v}" for n, v in sets.items()), flush=True)
    out = []
    for name, removed in sets.items():
        r = set_percentile(test, removed, seed=seed)
        r.update(seed=seed, criterion=name, removed=[units[i].name for i in removed],
                 k=len(removed), base_accuracy=test.accuracy(()))
        out.append(r)
    return out


def _percentile_seed(state, test, variants: dict, eps: float, args) -> list[dict]:
    from edgeprune.prune.evaluate import random_same_composition, set_percentile

    seed, units = state.seed, test.units
    sets = {}
    for name, ov in variants.items():
        sets[name], _ = state.select(ov, eps)
    print(f"seed {seed} ε={eps}: " + ", ".join(f"{n} {s}" for n, s in sets.items()), flush=True)
    _, ctx_default = state.select({}, eps)
    k = len(sets.get("default") or []) or 3
    sets.update(fixed_k_sets(state.model, state.data, k, seed, ctx_default, args.best_of))
    out = []
    for name, removed in sets.items():
        if not removed:
            r = {"accuracy": test.accuracy(()), "percentile": math.nan, "reference": "-",
                 "n_reference": 0}
        else:
            r = set_percentile(test, removed, seed=seed)
        r.update(seed=seed, criterion=name, removed=[units[i].name for i in removed],
                 k=len(removed), base_accuracy=test.accuracy(()), epsilon=eps)
        out.append(r)
    # chance check: random sets of the fixed-k baselines' size and composition
    rng = np.random.default_rng([seed, 11])
    ref = sets["deepest"]
    pr = [set_percentile(test, random_same_composition(units, ref, rng), seed=seed)
          ["percentile"] for _ in range(20)]
    out.append({"seed": seed, "criterion": "random", "k": len(ref),
                "percentile": float(np.mean(pr)), "accuracy": math.nan,
                "base_accuracy": test.accuracy(()), "epsilon": eps})
    return out


def _append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def percentile_table(rows: dict[str, list[dict]], args, setting: str) -> str:
    from edgeprune.prune.evaluate import t_interval

    lines = [f"Percentile of the removal set among same-size subsets (gated test accuracy, no "
             f"fine-tuning; 0.5 = chance), {args.arch} on {data_tag(args.data)}, "
             f"{args.epochs} epochs, seeds {args.seeds}, {setting}",
             "", "| criterion | seeds | mean k | percentile (95% CI) | min–max | "
             "test acc drop (points) |", "|---|---|---|---|---|---|"]
    order = sorted(rows, key=lambda n: -np.nanmean([r["percentile"] for r in rows[n]]
                                                  if any(not math.isnan(r["percentile"])
                                                         for r in rows[n]) else [-1]))
    for name in order:
        rs = rows[name]
        p = [r["percentile"] for r in rs if not math.isnan(r["percentile"])]
        mean, hw = t_interval(p) if p else (math.nan, math.nan)
        drops = [100 * (r["base_accuracy"] - r["accuracy"]) for r in rs
                 if not math.isnan(r["accuracy"])]
        drop = f"{np.mean(drops):.2f}" if drops else "-"
        empty = sum(1 for r in rs if math.isnan(r["percentile"]))
        note = f" ({empty} seed(s) removed nothing)" if empty else ""
        lines.append(f"| {name}{note} | {len(rs)} | {np.mean([r['k'] for r in rs]):.1f} | "
                     f"{mean:.2f} ± {hw:.2f} | {min(p, default=math.nan):.2f}–"
                     f"{max(p, default=math.nan):.2f} | {drop} |")
    return "\n".join(lines)


def cmd_paired(args) -> None:
    """Criterion vs ``draws`` random sets of its size and stage composition, identically
    fine-tuned; the paired difference per seed, and its 95% interval over seeds. Resumable:
    finished fine-tunes are read back from the log."""
    from edgeprune.prune.evaluate import finetuned_accuracy, random_same_composition, t_interval
    from edgeprune.units import list_units

    size = f"_k{args.k}" if args.k else f"_eps{args.epsilon}"
    log = CACHE / (f"paired_{data_tag(args.data)}_{args.arch}_e{args.epochs}_{args.criterion}"
                   f"{size}_ft{args.finetune_epochs}.jsonl")
    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["seed"], r["what"])] = r
    diffs, lines, others = [], [], {}
    for seed in parse_seeds(args.seeds):
        loaded, data = trained(args.data, args.arch, seed, args.epochs)
        model = loaded.model
        units = list_units(model)
        overrides = dict(mspic_variants()[args.criterion])
        if args.k:  # a fixed count instead of ε: the k-means policy with m − k clusters
            overrides["counts"] = [int(args.k)]
        removed, ctx = SeedState(model, data, seed).select(overrides, float(args.epsilon))
        if not removed:
            print(f"seed {seed}: {args.criterion} removed nothing; no pair", flush=True)
            continue
        rng = np.random.default_rng([seed, 23])
        sets = {"criterion": removed}
        for j in range(args.draws):
            sets[f"random{j}"] = list(random_same_composition(units, removed, rng))
        # the strongest fixed-size baselines of the percentile tables, at the same size
        k, costs = len(removed), ctx.single_costs()
        sets["deepest"] = list(range(len(units) - k, len(units)))
        sets["lowest-cost"] = sorted(sorted(range(len(units)), key=lambda i: (costs[i], i))[:k])
        accs = {}
        for what, s in sets.items():
            if (seed, what) not in done:
                t0 = time.perf_counter()
                acc = finetuned_accuracy(model, s, data, epochs=args.finetune_epochs,
                                         seed=seed * 1009)
                done[(seed, what)] = {"seed": seed, "what": what, "accuracy": acc,
                                      "removed": [units[i].name for i in s]}
                _append(log, done[(seed, what)])
                print(f"seed {seed} {what} {s}: test {acc:.4f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            accs[what] = done[(seed, what)]["accuracy"]
        rand = [v for w, v in accs.items() if w.startswith("random")]
        for name in ("deepest", "lowest-cost"):
            others.setdefault(name, []).append(100 * (accs[name] - float(np.mean(rand))))
        d = 100 * (accs["criterion"] - float(np.mean(rand)))
        diffs.append(d)
        wins = sum(accs["criterion"] > r for r in rand)
        lines.append(f"| {seed} | {len(removed)} | {100 * accs['criterion']:.2f} | "
                     f"{100 * np.mean(rand):.2f} ± {100 * np.std(rand, ddof=1):.2f} | "
                     f"{d:+.2f} | {wins}/{len(rand)} |")
    mean, hw = t_interval(diffs)
    head = [f"Paired fine-tuned comparison: {args.criterion} vs {args.draws} random draws of the "
            f"same size and stage composition, each fine-tuned {args.finetune_epochs} epoch(s) "
            f"(lr 0.01, same seed); {args.arch} on {data_tag(args.data)}, {args.epochs} "
            f"epochs; test accuracy (%)", "",
            "| seed | k | criterion | random mean ± sd | difference (points) | "
            "criterion beats draws |", "|---|---|---|---|---|---|"]
    print("\n".join(head + lines + [
        "", f"Mean paired difference over {len(diffs)} seeds: {mean:+.2f} points, 95% CI "
        f"[{mean - hw:+.2f}, {mean + hw:+.2f}]"]))
    for name, ds in others.items():
        m2, h2 = t_interval(ds)
        print(f"{name} (same size) minus the random mean: {m2:+.2f} points, 95% CI "
              f"[{m2 - h2:+.2f}, {m2 + h2:+.2f}]")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "percentile", "paired"):
        p = sub.add_parser(name)
        p.add_argument("--data", default="digits")
        p.add_argument("--arch", default="resnet20")
        p.add_argument("--seeds", default="0-4")
        p.add_argument("--epochs", type=int, default=15)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--epsilon", default=str(EPSILON), help="ε; percentile: a comma list")
        p.add_argument("--k", default="", help="percentile: also a table per fixed count "
                       "k (a comma list), every criterion removing exactly k units")
        p.add_argument("--best-of", type=int, default=len(RESOLUTIONS))
        p.add_argument("--variants", default="", help="comma-separated MSPIC variants "
                       "(default: all)")
        p.add_argument("--draws", type=int, default=10, help="paired: random draws per seed")
        p.add_argument("--finetune-epochs", type=int, default=2)
        p.add_argument("--criterion", default="default", help="paired: the MSPIC variant")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"train": cmd_train, "percentile": cmd_percentile, "paired": cmd_paired}[args.cmd](args)


if __name__ == "__main__":
    main()
