"""``edgeprune profile``: latency, memory and energy of one model for one target."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from edgeprune.cli.app import command, console
from edgeprune.cli.train import TRUST_HELP


def summary_table(report: dict) -> Table:
    """The report's variants as a rich table (the same columns as report.md)."""
    from edgeprune.report.format import SUMMARY_COLUMNS, summary_rows

    targets = report["target"].get("targets", [report["target"]["name"]])
    skip = 0 if len(set(targets)) > 1 else 1  # one target: it is in the title, not a column
    # Text, not markup: names come from report.json files ("[/x]" would fail, "[link=...]" link)
    table = Table(title=Text(f"edgeprune profile: {', '.join(dict.fromkeys(targets))}"))
    for i, col in enumerate(SUMMARY_COLUMNS[skip:], start=skip):
        table.add_column(col, justify="left" if i < 3 else "right")
    for row in summary_rows(report):
        table.add_row(*(Text(c) for c in row[skip:]))
    return table


@command("profile")
def profile_cmd(
    artifact: Path = typer.Argument(..., help="A checkpoint (.pt, exported to ONNX first) or an "
                                    "ONNX model."),
    target: str = typer.Option(..., "--target", help="Device target (see `edgeprune targets`)."),
    data: str = typer.Option(None, "--data", help="Data spec for test accuracy: cifar10:DIR, "
                             "npz:FILE, imagefolder:DIR or digits."),
    out: Path = typer.Option(Path("profile"), "--out", help="Folder for report.json, report.md, "
                             "report.html."),
    engine: Path = typer.Option(None, "--engine", help="A TensorRT engine to time on the device."),
    precision: str = typer.Option(None, "--precision", help="Precision the model runs at on the "
                                  "target (default: detected from the ONNX model)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Also time this batch on the host (needs a "
                              "dynamic batch dimension)."),
    no_host: bool = typer.Option(False, "--no-host", help="Skip the host latency measurement."),
    trust_model: bool = typer.Option(False, "--trust-model", help=TRUST_HELP),
) -> None:
    """Profile a model for a target: per-layer MACs, memory, energy, latency; write reports."""
    from edgeprune.profile.artifact import ProfileConfig, run_profile

    report = run_profile(ProfileConfig(artifact=artifact, target=target, data=data, out=out,
                                       engine=engine, precision=precision, batch=batch,
                                       measure_host=not no_host, trust_model=trust_model),
                         log=console.print)
    console.print(summary_table(report))
    v = report["variants"][0]
    console.print(f"peak activation memory {v['peak_activation_bytes']:,} B at "
                  f"{v['peak_activation_node']}; weights {v['weights_bytes']:,} B")
    console.print(f"reports: {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'}")
