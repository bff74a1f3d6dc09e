"""Reports: report.json (validated against schema.json), report.md and a self-contained
report.html, for one build or merged across builds for several targets.

``write_reports(report, out_dir)`` validates and writes the three files atomically;
``merge_reports(dirs)`` reads several build directories' report.json into one comparison report
(one row per target and variant) that writes the same way.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from edgeprune.atomic import write_bytes, write_json, write_text
from edgeprune.errors import EdgepruneError

SCHEMA_PATH = Path(__file__).with_name("schema.json")
REPORT_FILES = ("report.json", "report.md", "report.html")

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


def write_reports(report: dict, out_dir: Path) -> dict[str, Path]:
    """Validate ``report`` and write report.json, report.md and report.html into ``out_dir``.

    Every file is rendered before any is written, so a rendering error leaves no new files.
    """
    from edgeprune.report.html import render_html
    from edgeprune.report.markdown import render_markdown

    validate(report)
    out_dir = Path(out_dir)
    md = render_markdown(report)
    html = render_html(report, out_dir)
    paths = {name: out_dir / name for name in REPORT_FILES}
    write_json(paths["report.json"], report)
    write_text(paths["report.md"], md)
    write_bytes(paths["report.html"], html.encode("utf-8"))
    return paths


def read_report(directory: Path) -> dict:
    path = Path(directory) / "report.json"
    if not path.is_file():
        raise EdgepruneError(f"{path} does not exist; give build directories written by "
                             "`edgeprune build` or `edgeprune profile`")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EdgepruneError(f"{path} is not valid JSON ({e.msg}); rebuild it") from None
    validate(report)
    return report


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
            "mi_plot": next((str((Path(d) / r["mi_plot"]).resolve()) for d, r in zip(dirs, reports)
                             if r.get("mi_plot") and (Path(d) / r["mi_plot"]).is_file()), None)}


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
