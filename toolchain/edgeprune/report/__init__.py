"""Reports: report.json (validated against schema.json), report.md and a self-contained
report.html, for one build or merged across builds for several targets.

``write_reports(report, out_dir)`` validates and writes the three files atomically;
``merge_reports(dirs)`` reads several build directories' report.json into one comparison report
(one row per target and variant) that writes the same way.

A report.json read back is untrusted input (anyone may have edited it): the only file it can make
us read is its ``mi_plot``, and that must resolve inside the build directory it came from (no
absolute path, no ``..``, no symlink out of it); every string it holds is escaped by the
Markdown and HTML renderers.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from edgeprune.atomic import write_bytes, write_json, write_text
from edgeprune.errors import EdgepruneError

SCHEMA_PATH = Path(__file__).with_name("schema.json")
REPORT_FILES = ("report.json", "report.md", "report.html")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MI_PLOT_NAME = "mspic.png"  # a merged report's copy of the MI plot, beside its report.json

__all__ = ["merge_reports", "read_report", "validate", "write_reports"]


@cache
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate(report: dict) -> None:
    """Raise EdgepruneError naming the first place where ``report`` breaks the schema."""
    import jsonschema

    # Round-trip through JSON first: what is validated is what gets written.
    doc = json.loads(json.dumps(report, default=_plain))
    try:
        jsonschema.validate(doc, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise EdgepruneError(f"report does not match the report schema at {where}: "
                             f"{e.message.splitlines()[0][:200]}") from None


def write_reports(report: dict, out_dir: Path, *,
                  plot_dirs: tuple[Path, ...] = ()) -> dict[str, Path]:
    """Validate ``report`` and write report.json, report.md and report.html into ``out_dir``.

    ``mi_plot`` is a file name inside ``out_dir``; or, for a merged report, an absolute path
    inside one of ``plot_dirs`` (the build directories given, checked by merge_reports), which is
    copied beside the report as mspic.png. Every file is rendered before any is written, so a
    rendering error leaves no new files.
    """
    from edgeprune.report.html import render_html
    from edgeprune.report.markdown import render_markdown

    validate(report)
    out_dir = Path(out_dir)
    report, png, copy = _mi_plot(report, out_dir, plot_dirs)
    md = render_markdown(report)
    html = render_html(report, png)
    paths = {name: out_dir / name for name in REPORT_FILES}
    if copy:
        write_bytes(out_dir / MI_PLOT_NAME, png)
    write_json(paths["report.json"], report)
    write_text(paths["report.md"], md)
    write_bytes(paths["report.html"], html.encode("utf-8"))
    return paths


def inside(directory: Path, name: str, what: str = "mi_plot") -> Path:
    """``directory / name`` resolved, or EdgepruneError when it would leave ``directory``."""
    base = Path(directory).resolve()
    if Path(name).is_absolute() or ".." in Path(name).parts or "\0" in name:
        raise EdgepruneError(f"{what} {name!r} in {base / 'report.json'} must be a file name "
                             "inside that directory; refusing to read it")
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise EdgepruneError(f"{what} {name!r} in {base / 'report.json'} leads out of that "
                             f"directory (to {path}); refusing to read it")
    return path


def _mi_plot(report: dict, out_dir: Path, plot_dirs) -> tuple[dict, bytes | None, bool]:
    """(the report as written, the plot's bytes, whether to copy them beside the report)."""
    name = report.get("mi_plot")
    if not name:
        return report, None, False
    source = Path(name)
    if source.is_absolute() and any(source.resolve().is_relative_to(Path(d).resolve())
                                    for d in plot_dirs):
        path, report = source.resolve(), dict(report, mi_plot=MI_PLOT_NAME)
    else:
        path = inside(out_dir, name)
        plot_dirs = ()
    if not path.is_file():
        return dict(report, mi_plot=None), None, False
    png = path.read_bytes()
    if not png.startswith(PNG_MAGIC):  # a plot, not any other file of the build directory
        raise EdgepruneError(f"mi_plot {name!r} is not a PNG image; refusing to embed it")
    return report, png, bool(plot_dirs)


def read_report(directory: Path) -> dict:
    path = Path(directory) / "report.json"
    if not path.is_file():
        raise EdgepruneError(f"{path} does not exist; give build directories written by "
                             "`edgeprune build` or `edgeprune profile`")
    try:
        report = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise EdgepruneError(f"{path} is not valid JSON ({e.msg}); rebuild it") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as e:
        raise EdgepruneError(f"{path} is not a report written by edgeprune ({e}); "
                             "rebuild it") from None
    validate(report)
    return report


def _no_constant(name: str):
    # Python's json reads NaN and Infinity, which no schema bound catches and no plot can draw.
    raise ValueError(f"it holds {name}")


def merge_reports(dirs: list[Path]) -> dict:
    """One comparison report from several builds: one variant row per target and variant.

    Each variant keeps its fields and gains ``target``; the pruning summary is the first
    build's that has one.
    """
    if not dirs:
        raise EdgepruneError("give at least one build directory to merge")
    reports = [read_report(d) for d in dirs]
    variants, names = [], []
    for rep in reports:
        tname = rep["target"]["name"]
        names.append(tname)
        for v in rep["variants"]:
            variants.append(dict(v) | {"target": v.get("target", tname)})
    from edgeprune import __version__

    return {"target": {"name": " vs ".join(dict.fromkeys(names)), "display_name": "comparison",
                       "targets": names},
            "edgeprune_version": __version__,
            "comparison": True,
            "sources": [str(d) for d in dirs],
            "model": reports[0].get("model"),
            "variants": variants,
            "pruning": next((r["pruning"] for r in reports if r.get("pruning")), None),
            "mi_plot": _first_plot(dirs, reports)}


def _first_plot(dirs: list[Path], reports: list[dict]) -> str | None:
    """The first build's MI plot as an absolute path, checked to lie inside its directory."""
    plots = [inside(d, r["mi_plot"]) for d, r in zip(dirs, reports) if r.get("mi_plot")]
    return next((str(p) for p in plots if p.is_file()), None)


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
