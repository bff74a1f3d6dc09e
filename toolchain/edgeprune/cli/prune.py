"""``edgeprune prune``: MSPIC (or a baseline) on a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeprune.cli import options as o
from edgeprune.cli.app import command, console, make_progress


@command("prune")
def prune_cmd(
    model: Path = typer.Argument(..., help="Trained checkpoint (.pt) to prune."),
    data: str = typer.Option(..., "--data", help="Data spec: cifar10:DIR, npz:FILE, "
                             "imagefolder:DIR or digits."),
    out: Path = typer.Option(..., "--out", help="Directory for pruned.pt, mspic.json, "
                             "mspic.png and stages/."),
    method: str = typer.Option(None, "--method", help="mspic, random, l1 or cost (the "
                               "baselines remove as many units as MSPIC would; cost: those "
                               "whose removal alone costs least); mint (filters, by the "
                               "dependency between adjacent layers) or mspic+mint (units, then "
                               "filters) [default: mspic]."),
    mint_percentile: float = typer.Option(None, "--mint-percentile", help="MINT: per-layer "
                                          "threshold, a percentile of the dependency matrix "
                                          "[default: 90]."),
    mint_samples: int = typer.Option(None, "--mint-samples", help="MINT: training images for "
                                     "the GMI estimate [default: 200]."),
    mint_pool: int = typer.Option(None, "--mint-pool", help="MINT: activation maps pooled to "
                                  "N×N [default: 2]."),
    mint_min_keep: float = typer.Option(None, "--mint-min-keep", help="MINT: fraction of each "
                                        "layer's filters always kept [default: 0.1]."),
    mint_scope: str = typer.Option(None, "--mint-scope", help="MINT: all, or internal (no "
                                   "channels of residual streams or concatenations)."),
    stages: o.Stages = None,
    resolutions: o.Resolutions = None,
    max_error_increase: o.MaxErrorIncrease = None,
    finetune_epochs: o.FinetuneEpochs = None,
    lr: float = typer.Option(None, "--lr", help="Fine-tuning learning rate (cosine to 0)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Fine-tuning mini-batch size."),
    samples: o.Samples = None,
    sigma2: o.Sigma2 = None,
    scaling: str = typer.Option(None, "--scaling", help="Feature scaling before the MI "
                                "estimate: median, dim, or none (raw σ², as in the paper)."),
    clustering: str = typer.Option(None, "--clustering", help="kmeans (optimal 1-D, one "
                                   "policy per k) or bins (by resolution, as the paper) "
                                   "[default: kmeans]."),
    clusters: str = typer.Option(None, "--clusters", help="kmeans: k per policy, e.g. 3,5,7 "
                                 "(default: every k from 1 to the number of units − 1)."),
    objective: o.Objective = None,
    stable_clusters: o.StableClusters = None,
    stable_fraction: o.StableFraction = None,
    target: str = typer.Option(None, "--target", help="--objective latency: the device whose "
                               "estimated latency to save (a name from targets/; no default)."),
    target_file: Path = typer.Option(None, "--target-file", help="--objective latency: your "
                                     "own target TOML instead of --target."),
    latency_precision: str = typer.Option(None, "--latency-precision", help="--objective "
                                          "latency: precision of the estimate [default: fp32]."),
    target_reduction: o.TargetReduction = None,
    target_metric: str = typer.Option(None, "--target-metric", help="units, params or "
                                      "macs."),
    variant: str = typer.Option(None, "--variant", help="default, or paper (raw σ², "
                                "earliest unit kept, absolute ε, as published)."),
    score: str = typer.Option(None, "--score", help="Unit score: conditional "
                              "(−H(T|Y)), mi, or mi-shuffle (MI minus its label-shuffle mean) "
                              "[default: conditional]."),
    keep: str = typer.Option(None, "--keep", help="Unit a cluster keeps: first, score or "
                             "cost (the one whose removal costs most) [default: first]."),
    epsilon_mode: str = typer.Option(None, "--epsilon-mode", help="ε against: stage (its "
                                     "start), budget (the original model) or absolute "
                                     "[default: stage]."),
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue after the last finished stage "
                                "in OUT/stages (same model and options)."),
    device: str = typer.Option(None, "--device", help="torch device for fine-tuning."),
    trust_model: o.TrustModel = False,
    mean: o.Mean = None,
    std: o.Std = None,
    arch: o.Arch = None,
    num_classes: o.NumClasses = None,
    input_size: o.InputSize = None,
) -> None:
    """Remove skip-units stage by stage (MSPIC), fine-tuning after each stage."""
    from edgeprune import api
    from edgeprune.config import checked_overrides
    from edgeprune.prune import PruneConfig

    config = checked_overrides(PruneConfig(), o.given(
        method=method, stages=stages, finetune_epochs=finetune_epochs, lr=lr,
        batch_size=batch_size, samples=samples, sigma2=sigma2, scaling=scaling,
        clustering=clustering, target_reduction=target_reduction, target_metric=target_metric,
        seed=seed, device=device, variant=variant, score=score, keep=keep,
        epsilon_mode=epsilon_mode, objective=objective, stable_clusters=stable_clusters,
        stable_fraction=stable_fraction, mint_percentile=mint_percentile,
        mint_samples=mint_samples, mint_pool=mint_pool, mint_min_keep=mint_min_keep,
        mint_scope=mint_scope, target=target, latency_precision=latency_precision,
        target_file=str(target_file) if target_file else None,
        resolutions=o.parse_floats(resolutions, "--resolutions") if resolutions else None,
        max_error_increase=o.epsilon(max_error_increase),
        ks=[int(k) for k in o.parse_floats(clusters, "--clusters")] if clusters else None,
    ) | {"resume": resume}, "")
    config.validate()  # before loading anything, so bad options fail fast
    loaded = api.load(model, trust_model=trust_model, arch=arch, num_classes=num_classes,
                      input_size=input_size, mean=mean, std=std)
    ds = api.load_data(data, loaded)
    with make_progress() as progress:
        result = api.prune_model(loaded, ds, out, config, progress=progress)
    from edgeprune import distributed

    if not distributed.is_main():  # under torchrun rank 0 alone reports
        return
    s = result.summary
    if "channels_removed" in s:
        console.print(f"{s['method']}: {s['channels_removed']} filters removed; params "
                      f"{s['params_before']:,} → {s['params_after']:,}; MACs "
                      f"{s['macs_before']:,} → {s['macs_after']:,}; val accuracy "
                      f"{s['val_accuracy_before']:.2%} → {s['val_accuracy_after']:.2%}")
        console.print(f"wrote {result.path}, {out / 'mspic.json'}")
        return
    console.print(
        f"{s['method']}: {s['units_before']} → {s['units_after']} units in {s['stages']} "
        f"stage(s); params {s['params_before']:,} → {s['params_after']:,}; MACs "
        f"{s['macs_before']:,} → {s['macs_after']:,}; val accuracy "
        f"{s['val_accuracy_before']:.2%} → {s['val_accuracy_after']:.2%}")
    console.print(f"wrote {result.path}, {out / 'mspic.json'}, {out / 'mspic.png'}")
