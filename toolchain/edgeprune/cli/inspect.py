"""``edgeprune inspect``: the skip-units of a model, their sizes, and totals."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from edgeprune.cli import options as o
from edgeprune.cli.app import command, console


def describe(loaded, input_shape: str | None = None) -> dict:
    """The inspect report of a loaded model as a dict (what ``--json`` prints)."""
    from edgeprune.checkpoint import with_input_shape

    shape = with_input_shape(loaded, input_shape, guess=True)  # before the heavy imports below
    from edgeprune.complexity import model_complexity, unit_complexity
    from edgeprune.units import is_graph, list_units

    model, why = _prunable(loaded.model, shape)
    units = list_units(model) if model is not None else []
    sizes = unit_complexity(model, shape, units) if units else []
    total = model_complexity(loaded.model, shape)
    if model is not None and not units:
        why = NO_UNITS
    return {
        "found_on": None if model is None else "graph" if is_graph(model) else "modules",
        "why_no_units": why,
        "arch": loaded.info.arch,
        "num_classes": loaded.info.num_classes,
        "input_shape": list(shape),
        "removed_units": loaded.info.removed_units,
        "units": [{"index": u.index, "name": u.name, "stage": u.stage, "kind": u.kind,
                   "params": c.params, "macs": c.macs} for u, c in zip(units, sizes)],
        "totals": {"units": len(units), "params": total.params, "macs": total.macs},
    }


NO_UNITS = ("no skip-unit found: the traced graph has no addition of a branch and the shortcut "
            "it forks from, and no concatenation that grows channels (a plain feed-forward "
            "network); `--method none` builds it unpruned")


def _prunable(model, shape):
    """The model whose units are listed (traced unless the zoo's finder knows its blocks), or
    None and why (FX cannot trace it)."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.units import prunable

    try:
        return prunable(model, shape), None
    except EdgepruneError as e:
        return None, str(e)


@command("inspect")
def inspect_cmd(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to inspect."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    trust_model: o.TrustModel = False,
    arch: o.Arch = None,
    num_classes: o.NumClasses = None,
    input_size: o.InputSize = None,
    input_shape: str = typer.Option(None, "--input-shape", help="C,H,W input of a pickled "
                                    "module that records none [default: its channels, 32, 32]."),
) -> None:
    """List the model's skip-units (index, stage, kind, params, MACs) and its totals."""
    from edgeprune.checkpoint import arch_spec, load_model

    spec = arch_spec(arch, num_classes, input_size)
    report = describe(load_model(model, trust_model=trust_model, arch=spec), input_shape)
    if as_json:
        console.print_json(json.dumps(report))
        return
    table = Table(title=f"{report['arch']}: skip-units at input {tuple(report['input_shape'])}")
    for col in ("index", "name", "stage", "kind", "params", "MACs"):
        table.add_column(col, justify="right" if col in ("index", "params", "MACs") else "left")
    for u in report["units"]:
        table.add_row(str(u["index"]), u["name"], str(u["stage"]), u["kind"],
                      f"{u['params']:,}", f"{u['macs']:,}")
    if report["units"]:
        console.print(table)
    else:
        console.print(f"0 units: {report['why_no_units']}", highlight=False)
    t = report["totals"]
    removed = f", {len(report['removed_units'])} removed" if report["removed_units"] else ""
    console.print(f"{t['units']} units{removed}; model: {t['params']:,} params, "
                  f"{t['macs']:,} MACs ({t['params'] / 1e6:.3f} M params, "
                  f"{t['macs'] / 1e6:.1f} M MACs)")
