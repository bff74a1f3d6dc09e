"""``edgeprune build``: the main command, the whole pipeline for one target.

Options given on the command line override those in ``--config edgeprune.toml``, whose top level
holds build options (precision, method, data, ...) and whose [prune], [quantize] and [engine]
tables hold any option of those stages by its field name. ``--trust-model`` is a command-line
flag only.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgeprune.cli import options as o
from edgeprune.cli.app import command, console, err_console, make_progress, summary_table


@command("build")
def build_cmd(
    model: Path = typer.Argument(..., help="Trained model: an edgeprune checkpoint (.pt)."),
    target: str = typer.Option(None, "--target", help="Device target: a name from targets/ "
                               "(see `edgeprune targets`), or several separated by commas "
                               "(A,B): prune once, export and profile per target into "
                               "OUT/<target>/, and compare them in OUT/report.*."),
    target_file: o.TargetFile = None,
    data: o.Data = None,
    out: Path = typer.Option(None, "--out", help="Build directory to write [default: out]."),
    precision: o.Precision = None,
    method: str = typer.Option(None, "--method", help="Pruning method: mspic, random, l1, "
                               "cost or none [default: mspic]."),
    allow_emulated: o.AllowEmulated = None,
    resume: o.Resume = False,
    config: Path = typer.Option(None, "--config", help="edgeprune.toml with build options and "
                                "[prune], [quantize], [engine] tables."),
    seed: o.Seed = None,
    measure_host: o.MeasureHost = None,
    fps: o.Fps = None,
    stages: o.Stages = None,
    resolutions: o.Resolutions = None,
    max_error_increase: o.MaxErrorIncrease = None,
    finetune_epochs: o.FinetuneEpochs = None,
    samples: o.Samples = None,
    sigma2: o.Sigma2 = None,
    target_reduction: o.TargetReduction = None,
    objective: o.Objective = None,
    stable_clusters: o.StableClusters = None,
    stable_fraction: o.StableFraction = None,
    calibration_method: o.CalibrationMethod = None,
    calibration_samples: o.CalibrationSamples = None,
    calibration_data: o.CalibrationData = None,
    mean: o.Mean = None,
    std: o.Std = None,
    binary_epochs: o.BinaryEpochs = None,
    dla_core: o.DlaCore = None,
    reuse_pruning: Path = typer.Option(None, "--reuse-pruning", help="An earlier build "
                                       "directory of the same model, data and pruning options: "
                                       "take its pruned checkpoint instead of pruning again."),
    trust_model: o.TrustModel = False,
    arch: o.Arch = None,
    num_classes: o.NumClasses = None,
    input_size: o.InputSize = None,
) -> None:
    """Build a model for a device: load → prune → export → quantize → TensorRT check → engine
    (or its build script) → profile → report."""
    from edgeprune.api import build_model
    from edgeprune.build import FILE_KEYS, STAGES, BuildConfig, load_config_file

    file = load_config_file(config) if config else {}
    cli = {"target": target, "target_file": target_file, "data": data, "out": out,
           "precision": precision, "method": method, "allow_emulated": allow_emulated,
           "seed": seed, "measure_host": measure_host, "fps": fps, "mean": mean, "std": std}
    o.given(seed=seed, fps=fps)
    opts = {k: file[k] for k in FILE_KEYS if k in file}
    if cli["target"] or cli["target_file"]:  # the command line's target replaces the file's
        opts.pop("target", None)
        opts.pop("target_file", None)
    opts.update({k: v for k, v in cli.items() if v is not None})
    prune = {**file.get("prune", {}), **o.given(
        stages=stages, finetune_epochs=finetune_epochs, samples=samples, sigma2=sigma2,
        target_reduction=target_reduction, objective=objective, stable_clusters=stable_clusters,
        stable_fraction=stable_fraction,
        resolutions=o.parse_floats(resolutions, "--resolutions") if resolutions else None,
        max_error_increase=o.epsilon(max_error_increase))}
    quantize = {**file.get("quantize", {}), **o.given(
        calibration_method=calibration_method, calibration_samples=calibration_samples,
        calibration_data=calibration_data, binary_epochs=binary_epochs)}
    engine = {**file.get("engine", {}), **o.given(dla_core=dla_core)}
    cfg = BuildConfig(**{"target": None, **opts}, model=model, prune=prune, quantize=quantize,
                      engine=engine, trust_model=trust_model,
                      **o.given(arch=arch, num_classes=num_classes, input_size=input_size,
                                reuse_pruning=reuse_pruning))
    if isinstance(cfg.out, str):
        cfg.out = Path(cfg.out)
    if isinstance(cfg.target_file, str):
        cfg.target_file = Path(cfg.target_file)
    from edgeprune.multitarget import is_multi

    if is_multi(cfg.target):
        return _build_targets(cfg, resume)
    with make_progress(transient=True) as progress:
        overall = progress.add_task("build", total=len(STAGES), info="")

        def log(message: str) -> None:
            progress.console.print(message, highlight=False)
            progress.update(overall, info=message.split(":")[0][:40])

        result = build_model(cfg, resume=resume, on_log=log, progress=progress,
                             on_stage=lambda name: progress.advance(overall))
    from edgeprune import distributed

    if distributed.is_main():  # under torchrun rank 0 alone reports
        _summary(result.state, cfg.out)


def _summary(state, out: Path) -> None:
    """The variants side by side (what the user came for), and why the precision."""
    load = state.results["load"]
    table = Table(title=f"edgeprune build: {load.arch} for {state.target}")
    for col in ("variant", "precision", "params", "MACs", "acc.", "weights", "host ms",
                "est. ms", "mJ"):
        table.add_column(col, justify="left" if col in ("variant", "precision") else "right")
    for v in state.results["profile"].variants:
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
    console.print(f"precision {load.precision}: {load.resolution.reason}", highlight=False)
    err_console.print(f"build directory: {out}")
    console.print(f"report: {Path(out) / 'report.html'}")


def _build_targets(cfg, resume: bool) -> None:
    """``--target A,B``: one build per target (pruned once), then the merged comparison."""
    from edgeprune.api import build_targets
    from edgeprune.build import STAGES
    from edgeprune.multitarget import split_targets

    names = split_targets(cfg.target)  # before the progress bars start
    with make_progress(transient=True) as progress:
        overall = progress.add_task("build", total=len(STAGES) * len(names), info="")

        def log(message: str) -> None:
            progress.console.print(message, highlight=False)
            progress.update(overall, info=message.split(":")[0][:40])

        result = build_targets(cfg, resume=resume, on_log=log, progress=progress,
                               on_stage=lambda name: progress.advance(overall))
    console.print(summary_table(result.report))
    for name, state in result.states.items():
        load = state.results["load"]
        console.print(f"{name}: precision {load.precision}: {load.resolution.reason}",
                      highlight=False)
    err_console.print(f"build directories: {', '.join(str(cfg.out / n) for n in names)}")
    console.print(f"comparison: {Path(cfg.out) / 'report.html'}")
