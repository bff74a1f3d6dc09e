"""report.html: one self-contained page (tables plus plots as inline base64 PNG, no URLs).

Plots: accuracy vs MACs per variant, latency and energy per variant as bars, the per-layer energy
breakdown of the final variant, and the MI-per-unit plot from pruning (mspic.png) when present.
Nothing is fetched: no scripts, fonts or stylesheets from the network, so the page opens offline.
"""

from __future__ import annotations

import base64
import html
import io
import warnings

from edgeprune.report.format import (
    LEGEND,
    final_variant,
    model_name,
    report_title,
    sections,
    summary_columns,
    summary_rows,
)

LAYER_BARS = 30  # the per-layer plot shows the most energy-hungry layers, largest on top

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.note{color:#555;font-size:13px}
"""


def render_html(report: dict, mi_png: bytes | None = None) -> str:
    """The HTML page; ``mi_png`` is the MI plot to embed (write_reports reads it, from inside
    the build directory only). Every string from the report is HTML-escaped."""
    title = report_title(report)
    body = [f"<h1>{_e(title)}</h1>", f"<p class=note>edgeprune {_e(report['edgeprune_version'])}"
            + (f" · model {_e(model_name(report))}" if report.get("model") else "")
            + "</p>", "<h2>Variants</h2>", _table(summary_columns(report), summary_rows(report)),
            f"<p class=note>{_e(LEGEND)}</p>"]
    body += ["<h2>Plots</h2>"] + [_img(png, alt) for alt, png in _plots(report)]
    if mi_png:
        body += ["<h2>Mutual information per unit</h2>", _img(mi_png, "MI per unit")]
    body += _blocks(sections(report))
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _e(s: str) -> str:
    return html.escape(str(s), quote=True)


def _table(header, rows) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _blocks(blocks: list[tuple]) -> list[str]:
    out = []
    for block in blocks:
        if block[0] == "h":
            level = min(block[1], 4)
            out.append(f"<h{level}>{_e(block[2])}</h{level}>")
        elif block[0] == "table":
            out.append(_table(block[1], block[2]))
        else:
            out.append(f"<p class=note>{_e(block[1])}</p>")
    return out


def _img(png: bytes, alt: str) -> str:
    return (f'<img alt="{_e(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}">')


def _text(s) -> str:
    # matplotlib reads $...$ as mathtext (a malformed one fails the whole page): show it as is
    return str(s).replace("$", r"\$")


def _label(v: dict, report: dict) -> str:
    return _text((f"{v['target']}\n" if report.get("comparison") and v.get("target") else "")
                 + f"{v['name']} ({v['precision']})")


def _plots(report: dict) -> list[tuple[str, bytes]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    for alt, draw in (("accuracy vs MACs", _plot_accuracy),
                      ("accuracy vs target latency", _plot_pareto),
                      ("latency per variant", _plot_latency),
                      ("energy per variant", _plot_energy),
                      ("per-layer energy of the final variant", _plot_layers)):
        fig = draw(plt, report)
        if fig is None:
            continue
        buf = io.BytesIO()
        with warnings.catch_warnings():  # long names: the margins cannot fit, the plot is fine
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
        plt.close(fig)
        plots.append((alt, buf.getvalue()))
    return plots


def _plot_accuracy(plt, report: dict):
    pts = [(v["macs"] / 1e6, 100 * v["accuracy"], _label(v, report)) for v in report["variants"]
           if v.get("accuracy") is not None]
    if not pts:
        return None
    return _scatter(plt, pts, "MACs (millions)", "Accuracy (test split) vs MACs")


def _plot_pareto(plt, report: dict):
    """Accuracy against the latency that best describes the device: measured there, else the
    target estimate; the variants no other beats on both are joined (the Pareto front)."""
    pts = []
    for v in report["variants"]:
        lat = v["latency_ms"]
        ms = (lat.get("target_measured") or {}).get("median") or lat.get("target_estimated")
        if v.get("accuracy") is not None and ms:
            pts.append((ms, 100 * v["accuracy"], _label(v, report)))
    if len(pts) < 2:
        return None
    fig = _scatter(plt, pts, "ms per inference on the target (measured, else estimated)",
                   "Accuracy (test split) vs target latency")
    front = sorted(p for p in pts if not any(q[0] <= p[0] and q[1] >= p[1] and q != p
                                             for q in pts))
    ax = fig.axes[0]
    ax.plot([p[0] for p in front], [p[1] for p in front], "--o", color="grey", mfc="none",
            ms=13, label="Pareto front")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _scatter(plt, pts, xlabel: str, title: str):
    """One marker per variant, named in a legend beside the plot (labels written next to the
    points printed over each other wherever variants lie close); the y-axis never passes
    100%."""
    fig, ax = plt.subplots(figsize=(8, 4))
    markers = "osD^v<>Pp*Xh"
    for i, (x, y, label) in enumerate(pts):
        ax.scatter(x, y, marker=markers[i % len(markers)], s=50, alpha=0.8,
                   label=label.replace("\n", " "))
    lo = min(y for _, y, _ in pts)
    ax.set_ylim(max(0.0, lo - max(5.0, 0.3 * (100 - lo))), 100.0)
    ax.set(xlabel=xlabel, ylabel="accuracy (%)", title=title)
    ax.margins(x=0.15)
    ax.grid(alpha=.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _plot_latency(plt, report: dict):
    import numpy as np

    vs = report["variants"]
    series = {"host measured (median)": [(v["latency_ms"].get("host_measured") or {}).get("median")
                                         for v in vs],
              "target estimated": [v["latency_ms"].get("target_estimated") for v in vs],
              "target measured (median)": [(v["latency_ms"].get("target_measured") or {})
                                           .get("median") for v in vs]}
    series = {k: s for k, s in series.items() if any(x is not None for x in s)}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(vs)), 4))
    x, w = np.arange(len(vs)), 0.8 / len(series)
    for i, (name, s) in enumerate(series.items()):
        ax.bar(x + i * w, [0 if y is None else y for y in s], w, label=name)
    ax.set_xticks(x + w * (len(series) - 1) / 2, [_label(v, report) for v in vs], fontsize=8)
    ax.set(ylabel="ms per inference (batch 1)", title="Latency per variant")
    ax.legend(fontsize=8)
    return fig


def _plot_energy(plt, report: dict):
    import numpy as np

    vs = report["variants"]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(vs)), 4))
    bottom = np.zeros(len(vs))
    for key, label in (("compute", "compute"), ("weights_dram", "weights (DRAM)"),
                       ("activations", "activations")):
        vals = np.array([v["energy_mj"][key] for v in vs])
        ax.bar(range(len(vs)), vals, bottom=bottom, label=label)
        bottom += vals
    ax.set_xticks(range(len(vs)), [_label(v, report) for v in vs], fontsize=8)
    ax.set(ylabel="est. mJ per inference (45 nm)", title="Estimated energy per variant")
    ax.legend(fontsize=8)
    return fig


def _plot_layers(plt, report: dict):
    """The most energy-hungry layers as horizontal bars, so that their names read in full."""
    import numpy as np

    v = final_variant(report)
    layers = [lay for lay in v["layers"] if lay.get("energy_mj", {}).get("total", 0) > 0]
    if not layers:
        return None
    top = sorted(layers, key=lambda lay: -lay["energy_mj"]["total"])[:LAYER_BARS][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.28 * len(top)))
    left = np.zeros(len(top))
    for key in ("compute", "weights_dram", "activations"):
        vals = np.array([lay["energy_mj"][key] for lay in top])
        ax.barh(range(len(top)), vals, left=left, label=key.replace("_", " "))
        left += vals
    names = [_text(lay["name"].strip("/").replace("/", ".")) for lay in top]
    ax.set_yticks(range(len(top)), names, fontsize=7)
    more = len(layers) - len(top)
    ax.set(xlabel="est. mJ per inference (45 nm)", title=(
        f"Per-layer energy: {_label(v, report)}, top {len(top)} layers"
        + (f" ({more} more in report.json)" if more > 0 else "")).replace("\n", " "))
    ax.legend(fontsize=8, loc="lower right")
    return fig
