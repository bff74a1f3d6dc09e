"""``edgeprune report``: merge builds for several targets into one comparison."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeprune.cli.app import command, console, summary_table


@command("report")
def report_cmd(
    dirs: list[Path] = typer.Argument(..., help="Build directories holding report.json."),
    out: Path = typer.Option(Path("comparison"), "--out", help="Folder for the merged "
                             "report.json, report.md, report.html."),
) -> None:
    """Compare builds: one row per target and variant, written as json, md and html."""
    from edgeprune.report import merge_reports, write_reports

    merged = merge_reports(dirs)
    write_reports(merged, out, plot_dirs=tuple(dirs))
    console.print(summary_table(merged))
    console.print(f"reports: {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'}",
                  markup=False, highlight=False)
