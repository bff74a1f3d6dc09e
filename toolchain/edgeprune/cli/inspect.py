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
    from edgeprune.units import list_units

    units = list_units(loaded.model)
    sizes = unit_complexity(loaded.model, shape, units)
    total = model_complexity(loaded.model, shape)
    return {
        "arch": loaded.info.arch,
        "num_classes": loaded.info.num_classes,
        "input_shape": list(shape),
        "removed_units": loaded.info.removed_units,
        "units": [{"index": u.index, "name": u.name, "stage": u.stage, "kind": u.kind,
                   "params": c.params, "macs": c.macs} for u, c in zip(units, sizes)],
        "totals": {"units": len(units), "params": total.params, "macs": total.macs},
    }


@command("inspect")
def inspect_cmd(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to inspect."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    trust_model: o.TrustModel = False,
    input_shape: str = typer.Option(None, "--input-shape", help="C,H,W input of a pickled "
                                    "module that records none [default: its channels, 32, 32]."),
) -> None:
    """List the model's skip-units (index, stage, kind, params, MACs) and its totals."""
    from edgeprune.checkpoint import load_model

    report = describe(load_model(model, trust_model=trust_model), input_shape)
    if as_json:
        console.print_json(json.dumps(report))
        return
    table = Table(title=f"{report['arch']}: skip-units at input {tuple(report['input_shape'])}")
    for col in ("index", "name", "stage", "kind", "params", "MACs"):
        table.add_column(col, justify="right" if col in ("index", "params", "MACs") else "left")
    for u in report["units"]:
        table.add_row(str(u["index"]), u["name"], str(u["stage"]), u["kind"],
                      f"{u['params']:,}", f"{u['macs']:,}")
    console.print(table)
    t = report["totals"]
    removed = f", {len(report['removed_units'])} removed" if report["removed_units"] else ""
    console.print(f"{t['units']} units{removed}; model: {t['params']:,} params, "
                  f"{t['macs']:,} MACs ({t['params'] / 1e6:.3f} M params, "
                  f"{t['macs'] / 1e6:.1f} M MACs)")
