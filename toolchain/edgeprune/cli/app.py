"""The typer application and what every subcommand shares: error handling, consoles, progress."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    from rich.table import Table

app = typer.Typer(
    name="edgeprune",
    help="Prune skip-units with MSPIC, quantize, and deploy PyTorch models to Jetson devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
# Piped output (logs, CI) has no width of its own; 120 columns keep tables readable there.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def command(*args, **kwargs) -> Callable:
    """``app.command`` that turns an EdgepruneError into one line on stderr and exit code 2."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except EdgepruneError as e:
                err_console.print(f"error: {e}", style="red", soft_wrap=True, highlight=False,
                                  markup=False)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                err_console.print("interrupted", style="red")
                raise typer.Exit(130) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def make_progress(*, transient: bool = False) -> Progress:
    """Progress bars on stderr. ``transient`` clears them when done (and when a stage fails, so
    that an error stays one line). Where stderr is not a terminal (a log, a pipe) there are no
    bars, whose last frame and line breaks would be left there around the messages."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
                    transient=transient, disable=not err_console.is_terminal)


@contextmanager
def epoch_progress(label: str) -> Iterator[Callable]:
    """A progress callback for :func:`edgeprune.train.train`: one bar per epoch."""
    with make_progress() as progress:
        tasks: dict[int, int] = {}

        def update(epoch: int, epochs: int, batch: int, batches: int, loss: float) -> None:
            if epoch not in tasks:
                tasks[epoch] = progress.add_task(f"{label} epoch {epoch + 1}/{epochs}",
                                                 total=batches, info="")
            progress.update(tasks[epoch], completed=batch, info=f"loss {loss:.3f}")

        yield update


def summary_table(report: dict) -> Table:
    """The report's variants as a rich table (the same columns as report.md)."""
    from rich.table import Table
    from rich.text import Text

    from edgeprune.report.format import report_title, summary_columns, summary_rows

    targets = report["target"].get("targets", [report["target"]["name"]])
    skip = 0 if len(set(targets)) > 1 else 1  # one target: it is in the title, not a column
    # Text, not markup: names come from report.json files ("[/x]" would fail, "[link=...]" link)
    table = Table(title=Text(report_title(report)))
    for i, col in enumerate(summary_columns(report)[skip:], start=skip):
        # names are never cut ("jetso…"): they wrap, and numbers keep their width
        table.add_column(col, justify="left" if i < 3 else "right",
                         overflow="fold", min_width=len(max(targets, key=len)) if i == 0 else None)
    for row in summary_rows(report):
        table.add_row(*(Text(c) for c in row[skip:]))
    return table
