"""``edgeprune build``: the main command."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeprune.cli.app import command, console
from edgeprune.cli.train import TRUST_HELP


@command("build")
def build_cmd(
    model: Path = typer.Argument(..., help="Trained model: an edgeprune checkpoint (.pt)."),
    target: str = typer.Option(..., "--target", help="Device target (see `edgeprune targets`)."),
    data: str = typer.Option(None, "--data", help="Data spec: cifar10:DIR, npz:FILE, "
                             "imagefolder:DIR or digits."),
    out: Path = typer.Option(Path("out"), "--out", help="Build directory to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    trust_model: bool = typer.Option(False, "--trust-model", help=TRUST_HELP),
) -> None:
    """Build a model for a device: prune, quantize, export, engine, profile, report."""
    from edgeprune.build import BuildConfig, run_build

    run_build(BuildConfig(target=target, model=model, data=data, out=out, seed=seed,
                          trust_model=trust_model), log=console.print)
    console.print(f"report: {out / 'report.json'}")
