"""``edgeprune engine``: a TensorRT engine for a target, or the script that builds it there."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from edgeprune.cli import options as o
from edgeprune.cli.app import command, console


@command("engine")
def engine_cmd(
    onnx: Path = typer.Argument(..., help="ONNX model (the QDQ one for int8)."),
    target: o.Target = None,
    target_file: o.TargetFile = None,
    precision: str = typer.Option("fp16", "--precision", help="fp32, fp16 or int8."),
    allow_emulated: o.AllowEmulated = False,
    calib_cache: Path = typer.Option(None, "--calib-cache",
                                     help="TensorRT calibration cache for int8 without Q/DQ."),
    dla_core: int = typer.Option(None, "--dla-core", help="Run on this DLA core (GPU fallback)."),
    batch: str = typer.Option(None, "--batch",
                              help="MIN,OPT,MAX batch profile for a dynamic-batch ONNX."),
    out: Path = typer.Option(Path("engine"), "--out", "-o", help="Folder to write into."),
    no_build: bool = typer.Option(False, "--script-only",
                                  help="Only write plan.json and build_engine.sh."),
) -> None:
    """Build the engine where TensorRT and the target's GPU are present; else write
    build_engine.sh (trtexec for the target's TensorRT, run natively or in its container)."""
    from edgeprune.config import check_range
    from edgeprune.engine import make_engine
    from edgeprune.engine.plan import batch_shapes
    from edgeprune.onnx_file import read_onnx
    from edgeprune.precision import check_precision
    from edgeprune.targets import pick_target

    tgt = pick_target(target, target_file)
    check_precision(tgt, precision, allow_emulated=bool(allow_emulated))
    check_range("dla_core", dla_core)
    read_onnx(onnx)  # before --batch reads it: a .pt, an empty or a non-ONNX file is refused
    shapes = batch_shapes(onnx, batch) if batch else None
    result = make_engine(onnx, tgt, precision, out, calib_cache=calib_cache, dla_core=dla_core,
                         shapes=shapes, build=not no_build)
    # markup=False: file names are text ("[/x]" in one is not rich markup); the command is
    # shell-quoted, so pasting it runs trtexec and nothing else
    for line in result.plan["decisions"]:
        console.print(f"- {line}", highlight=False, markup=False)
    if result.kind == "engine":
        console.print(f"engine: {result.path} (versions in {out / 'engine.json'})",
                      markup=False)
    else:
        console.print(f"wrote {result.path}: run it on the {tgt.name} to build the engine",
                      highlight=False, markup=False)
        console.print(shlex.join(result.plan["trtexec"]), highlight=False, soft_wrap=True,
                      markup=False)
