"""``edgeprune profile``: latency, memory and energy of one model for one target."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeprune.cli import options as o
from edgeprune.cli.app import command, console, summary_table


@command("profile")
def profile_cmd(
    artifact: Path = typer.Argument(..., help="A checkpoint (.pt, exported to ONNX first) or an "
                                    "ONNX model."),
    target: o.Target = None,
    target_file: o.TargetFile = None,
    data: str = typer.Option(None, "--data", help="Data spec for test accuracy: cifar10:DIR, "
                             "npz:FILE, imagefolder:DIR or digits."),
    out: Path = typer.Option(Path("profile"), "--out", help="Folder for report.json, report.md, "
                             "report.html."),
    engine: Path = typer.Option(None, "--engine", help="A TensorRT engine to time on the device."),
    precision: str = typer.Option(None, "--precision", help="Precision the model runs at on the "
                                  "target (default: detected from the ONNX model)."),
    batch: int = typer.Option(1, "--batch", help="Also time this batch on the host (needs a "
                              "dynamic batch dimension)."),
    no_host: bool = typer.Option(False, "--no-host", help="Skip the host latency measurement."),
    trust_model: o.TrustModel = False,
) -> None:
    """Profile a model for a target: per-layer MACs, memory, energy, latency; write reports."""
    from edgeprune.profile.artifact import ProfileConfig, run_profile

    report = run_profile(ProfileConfig(artifact=artifact, target=target, target_file=target_file,
                                       data=data, out=out,
                                       engine=engine, precision=precision, batch=batch,
                                       measure_host=not no_host, trust_model=trust_model),
                         log=console.print)
    console.print(summary_table(report))
    v = report["variants"][0]
    console.print(f"peak activation memory {v['peak_activation_bytes']:,} B at "
                  f"{v['peak_activation_node']}; weights {v['weights_bytes']:,} B")
    console.print(f"reports: {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'}")
