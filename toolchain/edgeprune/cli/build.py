"""``edgeprune build``: the main command, the whole pipeline for one target.

Options given on the command line override those in ``--config edgeprune.toml``, whose top level
holds build options (precision, method, data, ...) and whose [prune], [quantize] and [engine]
tables hold any option of those stages by its field name.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgeprune.cli.app import command, console, err_console, make_progress
from edgeprune.cli.prune import parse_floats
from edgeprune.cli.train import TRUST_HELP

_BUILD_KEYS = ("target", "data", "out", "precision", "method", "allow_emulated", "seed",
               "measure_host", "fps", "trust_model")


@command("build")
def build_cmd(
    model: Path = typer.Argument(..., help="Trained model: an edgeprune checkpoint (.pt)."),
    target: str = typer.Option(None, "--target", help="Device target (see `edgeprune targets`)."),
    data: str = typer.Option(None, "--data", help="Data spec: cifar10:DIR, npz:FILE, "
                             "imagefolder:DIR or digits. Needed for pruning, int8 and binary."),
    out: Path = typer.Option(None, "--out", help="Build directory to write [default: out]."),
    precision: str = typer.Option(None, "--precision", help="auto (the fastest the target runs),"
                                  " fp32, fp16, int8 or binary [default: auto]."),
    method: str = typer.Option(None, "--method", help="Pruning method: mspic, random, l1 or "
                               "none [default: mspic]."),
    allow_emulated: bool = typer.Option(None, "--allow-emulated/--no-allow-emulated",
                                        help="Allow a precision the target has no fast path for."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted build in --out "
                                "from its last finished stage (same options needed)."),
    config: Path = typer.Option(None, "--config", help="edgeprune.toml with build options and "
                                "[prune], [quantize], [engine] tables."),
    seed: int = typer.Option(None, "--seed", help="Random seed [default: 0]."),
    measure_host: bool = typer.Option(None, "--measure-host/--no-measure-host", help="Time "
                                      "every variant with ONNX Runtime here [default: on]."),
    fps: float = typer.Option(None, "--fps", help="Frame rate for power in watts [default: 30]."),
    stages: int = typer.Option(None, "--stages", help="[prune] MSPIC stages."),
    resolutions: str = typer.Option(None, "--resolutions", help="[prune] bin resolutions, e.g. "
                                    "0.05,0.1,0.2 (or 'a,b;c,d' per stage)."),
    max_error_increase: str = typer.Option(None, "--max-error-increase", help="[prune] ε: "
                                           "largest val-error increase per stage (or a,b,...)."),
    finetune_epochs: int = typer.Option(None, "--finetune-epochs", help="[prune] fine-tuning "
                                        "epochs per stage."),
    samples: int = typer.Option(None, "--samples", help="[prune] training images for the MI "
                                "estimate."),
    sigma2: float = typer.Option(None, "--sigma2", help="[prune] σ² of the MI estimator."),
    target_reduction: float = typer.Option(None, "--target-reduction", help="[prune] stop once "
                                           "this fraction of the parameters is removed."),
    calibration_method: str = typer.Option(None, "--calibration-method", help="[quantize] "
                                           "minmax, entropy or percentile."),
    calibration_samples: int = typer.Option(None, "--calibration-samples", help="[quantize] "
                                            "calibration images from the train split."),
    binary_epochs: int = typer.Option(None, "--binary-epochs", help="[quantize] STE fine-tuning "
                                      "epochs for binary weights."),
    dla_core: int = typer.Option(None, "--dla-core", help="[engine] run on this DLA core, with "
                                 "GPU fallback (Xavier, Orin NX, AGX Orin)."),
    trust_model: bool = typer.Option(False, "--trust-model", help=TRUST_HELP),
) -> None:
    """Build a model for a device: load → prune → export → quantize → TensorRT check → engine
    (or its build script) → profile → report."""
    from edgeprune.build import STAGES, BuildConfig, load_config_file, run_build
    from edgeprune.errors import EdgepruneError

    file = load_config_file(config) if config else {}
    cli = {"target": target, "data": data, "out": out, "precision": precision, "method": method,
           "allow_emulated": allow_emulated, "seed": seed, "measure_host": measure_host,
           "fps": fps, "trust_model": trust_model or None}
    opts = {k: file[k] for k in _BUILD_KEYS if k in file}
    unknown = sorted(set(file) - set(_BUILD_KEYS) - {"prune", "quantize", "engine"})
    if unknown:
        raise EdgepruneError(f"{config}: unknown option(s) {', '.join(unknown)}; the top level "
                             f"takes {', '.join(_BUILD_KEYS)} and [prune], [quantize], [engine]")
    opts.update({k: v for k, v in cli.items() if v is not None})
    if not opts.get("target"):
        raise EdgepruneError("no target given: pass --target NAME (see `edgeprune targets`)")
    prune = dict(file.get("prune", {}))
    eps = parse_floats(max_error_increase, "--max-error-increase") if max_error_increase else None
    prune.update(_given(stages=stages, finetune_epochs=finetune_epochs, samples=samples,
                        sigma2=sigma2, target_reduction=target_reduction,
                        resolutions=parse_floats(resolutions, "--resolutions")
                        if resolutions else None,
                        max_error_increase=(eps[0] if eps and len(eps) == 1 else eps)))
    quantize = {**file.get("quantize", {}), **_given(
        calibration_method=calibration_method, calibration_samples=calibration_samples,
        binary_epochs=binary_epochs)}
    engine = {**file.get("engine", {}), **_given(dla_core=dla_core)}
    cfg = BuildConfig(model=model, prune=prune, quantize=quantize, engine=engine,
                      **{k: Path(v) if k == "out" else v for k, v in opts.items()})
    with make_progress(transient=True) as progress:
        overall = progress.add_task("build", total=len(STAGES), info="")

        def log(message: str) -> None:
            progress.console.print(message, highlight=False)
            progress.update(overall, info=message.split(":")[0][:40])

        state = run_build(cfg, resume=resume, log=log, progress=progress,
                          on_stage=lambda name: progress.advance(overall))
    _summary(state, cfg.out)


def _given(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _summary(state: dict, out: Path) -> None:
    """The variants side by side: what the user came for."""
    variants = state["results"]["profile"]["variants"]
    table = Table(title=f"edgeprune build: {state['results']['load']['arch']} for "
                        f"{state['target']}")
    for col in ("variant", "precision", "params", "MACs", "acc.", "weights", "host ms",
                "est. ms", "mJ"):
        table.add_column(col, justify="left" if col in ("variant", "precision") else "right")
    for v in variants:
        lat = v["latency_ms"]
        host = lat.get("host_measured") or {}
        acc = v.get("accuracy")
        table.add_row(v["name"], v["precision"], f"{v['params'] / 1e3:,.1f} K",
                      f"{v['macs'] / 1e6:,.2f} M",
                      f"{acc:.2%}" if acc is not None else "-",
                      f"{v['weights_bytes'] / 1024:.0f} KiB",
                      f"{host['median']:.3f}" if host.get("median") else "-",
                      f"{lat['target_estimated']:.3f}" if lat.get("target_estimated") else "-",
                      f"{v['energy_mj']['total']:.3f}")
    console.print(table)
    err_console.print(f"build directory: {out}")
    console.print(f"report: {Path(out) / 'report.html'}")
