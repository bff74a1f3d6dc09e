"""``edgeprune export``: a checkpoint to a checked, simplified ONNX file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgeprune.cli import options as o
from edgeprune.cli.app import command, console


@command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to export."),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch",
                                       help="Leave the batch dimension dynamic (TensorRT then "
                                            "needs --batch MIN,OPT,MAX when building)."),
    target: str = typer.Option(None, "--target",
                               help="Also check the graph against this target's TensorRT."),
    target_file: o.TargetFile = None,
    precision: str = typer.Option("fp32", "--precision",
                                  help="Precision the --target check assumes (fp32, fp16)."),
    trust_model: o.TrustModel = False,
    arch: o.Arch = None,
    num_classes: o.NumClasses = None,
    input_size: o.InputSize = None,
    input_shape: str = typer.Option(None, "--input-shape", help="C,H,W input of a pickled "
                                    "module that records none."),
) -> None:
    """Export to ONNX (opset 13), simplify, check, and compare with PyTorch under ONNX Runtime."""
    from edgeprune.checkpoint import arch_spec, load_model, with_input_shape
    from edgeprune.export import export_onnx
    from edgeprune.precision import get_precision
    from edgeprune.targets import pick_target

    spec = arch_spec(arch, num_classes, input_size)
    tgt = pick_target(target, target_file, required=False)  # a bad name fails before the export
    get_precision(precision)
    loaded = load_model(model, trust_model=trust_model, arch=spec)
    shape = with_input_shape(loaded, input_shape)
    report = export_onnx(loaded.model, shape, out, dynamic_batch=dynamic_batch)
    table = Table(title=f"exported {loaded.info.arch} to {out}", show_header=False)
    for key, value in report.to_dict().items():
        table.add_row(key, f"{value:.2e}" if isinstance(value, float) else str(value))
    console.print(table)
    if tgt is None:
        return
    if tgt.runtime != "tensorrt":
        console.print(f"{tgt.name} runs ONNX Runtime: no TensorRT check needed")
        return
    from edgeprune.compat import check_onnx

    check = check_onnx(out, tgt, precision, profile_hint="build its engine with `edgeprune "
                       "engine --batch MIN,OPT,MAX`")
    console.print(f"TensorRT {check.tensorrt} ({tgt.name}): all {check.nodes} nodes of "
                  f"{len(check.ops)} op types supported (opset {check.opset} <= "
                  f"{check.max_opset}; {check.ops_file})")
