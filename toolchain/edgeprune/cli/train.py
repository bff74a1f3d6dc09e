"""``edgeprune train`` and ``edgeprune evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edgeprune.cli import options as o
from edgeprune.cli.app import command, console, epoch_progress


@command("train")
def train_cmd(
    arch: str = typer.Option(..., "--arch", help="Architecture name (see `edgeprune models`; "
                             "e.g. resnet20, densenet_bc100, tv:mobilenet_v2)."),
    data: str = typer.Option(..., "--data", help="Data spec: cifar10:DIR, npz:FILE, "
                             "imagefolder:DIR or digits."),
    out: Path = typer.Option(..., "--out", help="Where to write the checkpoint (.pt)."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs [default: 30]."),
    batch_size: int = typer.Option(None, "--batch-size", help="Mini-batch size [default: 128]."),
    lr: float = typer.Option(None, "--lr", help="Initial learning rate, cosine schedule to 0 "
                             "[default: 0.1]."),
    warmup_epochs: int = typer.Option(None, "--warmup-epochs",
                                      help="Linear warm-up from lr/10 over this many epochs "
                                      "before the cosine decay; deep nets such as resnet56 "
                                      "need 1–2 at lr 0.1 [default: 0]."),
    seed: o.Seed = None,
    device: str = typer.Option(None, "--device", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Train a model from scratch (SGD, momentum 0.9, cosine schedule) and save a checkpoint."""
    from edgeprune.checkpoint import save_checkpoint
    from edgeprune.data import load_dataset
    from edgeprune.train import TrainConfig, evaluate, train_from_scratch

    config = TrainConfig(**o.given(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                   device=device, warmup_epochs=warmup_epochs))
    ds = load_dataset(data)
    with epoch_progress("train") as progress:
        trained = train_from_scratch(arch, ds, config, progress)
    result = evaluate(trained.model.cpu(), ds, "test")
    save_checkpoint(out, trained.model, trained.info)
    console.print(f"test accuracy {result.accuracy:.2%} (loss {result.loss:.4f}, n={result.n}); "
                  f"wrote {out}")


@command("evaluate")
def evaluate_cmd(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to evaluate."),
    data: str = typer.Option(..., "--data", help="Data spec (see `edgeprune train --help`)."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    trust_model: o.TrustModel = False,
    mean: o.Mean = None,
    std: o.Std = None,
    arch: o.Arch = None,
    num_classes: o.NumClasses = None,
    input_size: o.InputSize = None,
) -> None:
    """Top-1 accuracy and cross-entropy loss of a model on a data split."""
    from edgeprune import api
    from edgeprune.train import evaluate

    loaded = api.load(model, trust_model=trust_model, arch=arch, num_classes=num_classes,
                      input_size=input_size, mean=mean, std=std)
    ds = api.load_data(data, loaded)
    r = evaluate(loaded.model, ds, split)
    source = ds.extra.get("normalization_source")
    if as_json:
        console.print_json(json.dumps({"accuracy": r.accuracy, "loss": r.loss, "n": r.n,
                                       "split": split, "normalization": source}))
    else:
        console.print(f"{split}: accuracy {r.accuracy:.2%}, loss {r.loss:.4f}, n={r.n} "
                      f"(normalization: {source})")
