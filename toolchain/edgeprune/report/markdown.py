"""report.md: the report as Markdown tables (summary, pruning, energy, per-layer breakdown).

Every string taken from the report (file, target, variant, layer, unit and architecture names,
which anyone may have edited in report.json) goes through ``md_text``: it stays one line and
shows literally, so it cannot open a link, an image, a raw HTML tag, code or a new table cell.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from edgeprune.report.format import (
    LEGEND,
    model_name,
    report_title,
    sections,
    summary_columns,
    summary_rows,
)

# Characters with a Markdown (or GFM: tables, strikethrough, math, autolinks) meaning anywhere in
# a line; a backslash makes each one literal. Values never start a line, so block markers at a
# line start (#, >, -, 1.) cannot arise, but # is escaped anyway (closing heading sequences).
_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~&@$])")
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def md_text(value) -> str:
    """``value`` as literal inline Markdown text on one line."""
    text = _SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))
    # GFM turns bare URLs into links: break "scheme://" and "www." (escapes are still literal).
    text = text.replace("://", r":\/\/")
    return re.sub(r"(?i)\b(www)\.", r"\1\\.", text)


def table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_text(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_blocks(blocks: list[tuple]) -> list[str]:
    out = []
    for block in blocks:
        if block[0] == "h":
            out += ["#" * block[1] + " " + md_text(block[2]), ""]
        elif block[0] == "table":
            out += [table(block[1], block[2]), ""]
        else:
            out += [md_text(block[1]), ""]
    return out


def render_markdown(report: dict) -> str:
    name = model_name(report)
    parts = [f"# {md_text(report_title(report))}", "",
             md_text(f"edgeprune {report['edgeprune_version']}"
                     + (f" · model {name}" if report.get("model") else "")), ""]
    parts += ["## Variants", "", table(summary_columns(report), summary_rows(report)), ""]
    parts += [md_text(LEGEND), ""]
    parts += render_blocks(sections(report))
    if report.get("mi_plot"):
        # a relative file name (write_reports made sure), percent-encoded as a link target
        parts += ["## Mutual information per unit", "",
                  f"![MI per unit]({quote(str(report['mi_plot']))})", ""]
    return "\n".join(parts)
