"""report.md: the report as Markdown tables (summary, pruning, energy, per-layer breakdown)."""

from __future__ import annotations

from edgeprune.report.format import (
    SUMMARY_COLUMNS,
    final_variant,
    fmt_bytes,
    fmt_float,
    fmt_int,
    report_title,
    summary_rows,
)

LEGEND = ("Latency: host = ONNX Runtime CPU, batch 1; target est. = per-layer roofline from the "
          "target file; target meas. = on the device. Energy: 45 nm estimate per inference "
          "(Horowitz, ISSCC 2014); power = energy × frame rate.")
LAYER_ROWS = 40  # the per-layer table lists the most energy-hungry layers; the JSON has all


def table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    title = report_title(report)
    parts = [f"# {title}", "", f"edgeprune {report['edgeprune_version']}"
             + (f" · model {_model_name(report)}" if report.get("model") else ""), ""]
    parts += ["## Variants", "", table(SUMMARY_COLUMNS, summary_rows(report)), ""]
    parts += [LEGEND, ""]
    parts += _energy_section(report) + _pruning_section(report.get("pruning"))
    parts += _layers_section(final_variant(report))
    if report.get("mi_plot"):
        parts += ["## Mutual information per unit", "", f"![MI per unit]({report['mi_plot']})", ""]
    return "\n".join(parts)


def _model_name(report: dict) -> str:
    model = report.get("model") or {}
    return str(model.get("arch") or model.get("path") or "")


def _energy_section(report: dict) -> list[str]:
    rows = [[v.get("target", report["target"]["name"]), v["name"], v["precision"]]
            + [fmt_float(v["energy_mj"][k], 4) for k in ("compute", "weights_dram", "activations",
                                                         "total")]
            for v in report["variants"]]
    header = ["target", "variant", "precision", "compute mJ", "weights DRAM mJ",
              "activations mJ", "total mJ"]
    return ["## Energy per inference (estimated)", "", table(header, rows), ""]


def _pruning_section(pruning: dict | None) -> list[str]:
    if not pruning:
        return []
    rows = [[k.replace("_", " "), fmt_int(v) if isinstance(v, int) else
             f"{v:.4f}" if isinstance(v, float) else str(v)]
            for k, v in pruning.items() if not isinstance(v, (list, dict))]
    out = ["## Pruning", "", table(["", "value"], rows), ""]
    stages = pruning.get("stage_log") or []
    if stages and all(isinstance(s, dict) for s in stages):
        keys = list(dict.fromkeys(k for s in stages for k in s
                                  if not isinstance(s[k], (list, dict))))
        out += ["### Stages", "", table(keys, [[str(s.get(k, "")) for k in keys]
                                               for s in stages]), ""]
    return out


def _layers_section(v: dict) -> list[str]:
    layers = [lay for lay in v["layers"] if lay.get("energy_mj", {}).get("total", 0) > 0
              or lay["macs"]]
    layers = sorted(layers, key=lambda lay: -lay.get("energy_mj", {}).get("total", 0))
    rows = [[lay["name"], lay["op_type"], "×".join(map(str, lay["output_shape"])),
             lay["precision"], fmt_int(lay["macs"]), fmt_int(lay["params"]),
             fmt_bytes(lay["weight_bytes"]),
             fmt_bytes(lay["act_read_bytes"] + lay["act_write_bytes"]),
             fmt_float(lay.get("energy_mj", {}).get("total"), 5),
             fmt_float(lay.get("latency_estimated_ms"), 4)] for lay in layers[:LAYER_ROWS]]
    header = ["layer", "op", "output", "precision", "MACs", "params", "weights",
              "activations r+w", "energy mJ", "est. ms"]
    more = len(layers) - LAYER_ROWS
    name = f"{v.get('target') + ' / ' if v.get('target') else ''}{v['name']} ({v['precision']})"
    return ([f"## Layers of {name}, by energy", "", table(header, rows)]
            + ([f"\n…and {more} more layers in report.json."] if more > 0 else []) + [""])
