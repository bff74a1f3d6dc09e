"""``edgeprune profile``: latency, memory and energy of one model for one target."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeprune.cli import options as o
from edgeprune.cli.app import command, console, summary_table


@command("profile")
def profile_cmd(
    artifact: Path = typer.Argument(..., help="A checkpoint (.pt, exported to ONNX first), an "
                                    "ONNX model, or a build directory (with --engine or "
                                    "--trtexec-dir: the device's figures go into its report)."),
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
    mean: o.Mean = None,
    std: o.Std = None,
    trtexec_dir: Path = typer.Option(None, "--trtexec-dir", help="With a build directory: read "
                                     "the files build_engine.sh's trtexec wrote on the device."),
    no_accuracy: bool = typer.Option(False, "--no-accuracy", help="With a build directory and "
                                     "--engine: skip running the test split through the engine."),
    max_accuracy_gap: float = typer.Option(0.01, "--max-accuracy-gap", help="Flag an engine "
                                           "whose top-1 is this much below the host's."),
) -> None:
    """Profile a model for a target: per-layer MACs, memory, energy, latency; write reports.
    Given a build directory, fill its report with what the device measured instead."""
    if artifact.is_dir():
        return _measure(artifact, engine, trtexec_dir, not no_accuracy, max_accuracy_gap)
    if trtexec_dir is not None:
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError("--trtexec-dir goes with a build directory: `edgeprune profile "
                             "BUILD_DIR --trtexec-dir DIR`")
    from edgeprune.profile.artifact import ProfileConfig, run_profile

    report = run_profile(ProfileConfig(artifact=artifact, target=target, target_file=target_file,
                                       data=data, out=out,
                                       engine=engine, precision=precision, batch=batch,
                                       measure_host=not no_host, trust_model=trust_model,
                                       mean=mean, std=std),
                         log=console.print)
    console.print(summary_table(report))
    v = report["variants"][0]
    console.print(f"peak activation memory {v['peak_activation_bytes']:,} B at "
                  f"{v['peak_activation_node']}; weights {v['weights_bytes']:,} B")
    console.print(f"reports: {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'}")


def _measure(build: Path, engine: Path | None, trtexec_dir: Path | None, accuracy: bool,
             max_gap: float) -> None:
    from edgeprune.engine.measure import MeasureConfig, measure_build
    from edgeprune.errors import EdgepruneError

    if not 0 <= max_gap <= 1:
        raise EdgepruneError(f"--max-accuracy-gap is a fraction of top-1 in [0, 1], got {max_gap}")
    report = measure_build(MeasureConfig(build, engine=engine, trtexec_dir=trtexec_dir,
                                         accuracy=accuracy, max_accuracy_gap=max_gap),
                           log=lambda m: console.print(m, markup=False, highlight=False))
    console.print(summary_table(report))
