"""``edgeprune prune``: MSPIC (or a baseline) on a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeprune.cli.app import command, console, make_progress
from edgeprune.cli.train import TRUST_HELP
from edgeprune.errors import EdgepruneError


def parse_floats(text: str, what: str) -> list[float] | list[list[float]]:
    """"0.05,0.1" → one list for all stages; "0.05,0.1;0.1,0.2" → one list per stage."""
    try:
        per_stage = [[float(v) for v in part.split(",") if v.strip()]
                     for part in text.split(";") if part.strip()]
    except ValueError:
        raise EdgepruneError(f"{what} must be numbers separated by commas (stages by ';'), "
                             f"got {text!r}") from None
    if not per_stage or not all(per_stage):
        raise EdgepruneError(f"{what} is empty; give e.g. 0.05,0.1,0.2")
    return per_stage[0] if len(per_stage) == 1 else per_stage


@command("prune")
def prune_cmd(
    model: Path = typer.Argument(..., help="Trained checkpoint (.pt) to prune."),
    data: str = typer.Option(..., "--data", help="Data spec: cifar10:DIR, npz:FILE, "
                             "imagefolder:DIR or digits."),
    out: Path = typer.Option(..., "--out", help="Directory for pruned.pt, mspic.json, "
                             "mspic.png and stages/."),
    method: str = typer.Option("mspic", "--method", help="mspic, random or l1 (the baselines "
                               "remove as many units as MSPIC would)."),
    stages: int = typer.Option(3, "--stages", help="Pruning stages (each: score, remove, "
                               "fine-tune)."),
    resolutions: str = typer.Option("0.02,0.05,0.1,0.2,0.3", "--resolutions", help="Bin "
                                    "resolutions r, one policy each; 'a,b;c,d' gives one list "
                                    "per stage."),
    max_error_increase: str = typer.Option("0.02", "--max-error-increase", help="ε: largest "
                                           "allowed increase of the validation error (absolute, "
                                           "gates only); one value or one per stage."),
    finetune_epochs: int = typer.Option(3, "--finetune-epochs", help="Fine-tuning epochs per "
                                        "stage."),
    lr: float = typer.Option(0.01, "--lr", help="Fine-tuning learning rate (cosine to 0)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Fine-tuning mini-batch size."),
    samples: int = typer.Option(2000, "--samples", help="Training images for the MI estimate."),
    sigma2: float = typer.Option(None, "--sigma2", help="Kernel variance σ² (default: 1.0 × "
                                 "the median squared distance with --scaling median)."),
    scaling: str = typer.Option("median", "--scaling", help="Feature scaling before the MI "
                                "estimate: median, dim, or none (raw σ², as in the paper)."),
    clustering: str = typer.Option("bins", "--clustering", help="bins (by resolution) or "
                                   "kmeans (optimal 1-D)."),
    clusters: str = typer.Option(None, "--clusters", help="kmeans: k per policy, e.g. 3,5,7 "
                                 "(default: as many as the bins)."),
    target_reduction: float = typer.Option(None, "--target-reduction", help="Stop once this "
                                           "fraction of --target-metric is removed."),
    target_metric: str = typer.Option("params", "--target-metric", help="units, params or "
                                      "macs."),
    variant: str = typer.Option("default", "--variant", help="default, or paper (raw σ², "
                                "earliest unit kept, absolute ε, as published)."),
    score: str = typer.Option("conditional", "--score", help="Unit score: conditional "
                              "(−H(T|Y)), mi, or mi-shuffle (MI minus its label-shuffle mean)."),
    keep: str = typer.Option("first", "--keep", help="Unit a cluster keeps: first, score or "
                             "cost (the one whose removal costs most)."),
    epsilon_mode: str = typer.Option("stage", "--epsilon-mode", help="ε against: stage (its "
                                     "start), budget (the original model) or absolute."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue after the last finished stage "
                                "in OUT/stages (same model and options)."),
    device: str = typer.Option("cpu", "--device", help="torch device for fine-tuning."),
    trust_model: bool = typer.Option(False, "--trust-model", help=TRUST_HELP),
) -> None:
    """Remove skip-units stage by stage (MSPIC), fine-tuning after each stage."""
    from edgeprune.checkpoint import data_for_model, load_model
    from edgeprune.data import load_dataset
    from edgeprune.prune import PruneConfig, prune_model

    eps = parse_floats(max_error_increase, "--max-error-increase")
    if isinstance(eps[0], list):
        raise EdgepruneError("--max-error-increase takes one value or one per stage: a,b,c")
    config = PruneConfig(
        method=method, stages=stages, resolutions=parse_floats(resolutions, "--resolutions"),
        max_error_increase=eps[0] if len(eps) == 1 else eps, finetune_epochs=finetune_epochs,
        lr=lr, batch_size=batch_size, samples=samples, sigma2=sigma2, scaling=scaling,
        clustering=clustering,
        ks=[int(k) for k in parse_floats(clusters, "--clusters")] if clusters else None,
        target_reduction=target_reduction, target_metric=target_metric, seed=seed,
        variant=variant, score=score, keep=keep, epsilon_mode=epsilon_mode,
        resume=resume, device=device)
    config.validate()  # before loading anything, so bad options fail fast
    loaded = load_model(model, trust_model=trust_model)
    ds = data_for_model(loaded, load_dataset(data))
    with make_progress() as progress:
        result = prune_model(loaded, ds, config, out, progress=progress)
    s = result.summary
    console.print(
        f"{s['method']}: {s['units_before']} → {s['units_after']} units in {s['stages']} "
        f"stage(s); params {s['params_before']:,} → {s['params_after']:,}; MACs "
        f"{s['macs_before']:,} → {s['macs_after']:,}; val accuracy "
        f"{s['val_accuracy_before']:.2%} → {s['val_accuracy_after']:.2%}")
    console.print(f"wrote {result.path}, {out / 'mspic.json'}, {out / 'mspic.png'}")
