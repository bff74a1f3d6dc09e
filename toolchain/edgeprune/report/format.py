"""Number formatting, the summary rows and the report's sections, shared by the Markdown, HTML
and CLI renderings.

A section is a list of blocks of plain text: ``("h", level, text)``, ``("p", text)`` or
``("table", header, rows)``. Each renderer escapes every string it takes from a block for its
own format, so a name in report.json (which anyone may have edited) is always shown as text.
"""

from __future__ import annotations

LEGEND = ("Latency: host = ONNX Runtime CPU, batch 1; target est. = per-layer roofline from the "
          "target file; target meas. = on the device. Energy: 45 nm estimate per inference "
          "(Horowitz, ISSCC 2014); power = energy × frame rate.")
LAYER_ROWS = 40  # the per-layer table lists the most energy-hungry layers; the JSON has all


def fmt_int(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def fmt_si(n: float | None, unit: str = "") -> str:
    """1234567 -> '1.23 M'; keeps reports readable at a glance."""
    if n is None:
        return "—"
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for div, unit in ((2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def fmt_float(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _median(entry: dict | None) -> float | None:
    return entry.get("median") if entry else None


SUMMARY_COLUMNS = ("target", "variant", "precision", "params", "MACs", "accuracy", "weights",
                   "peak act.", "host ms (med / p90)", "target est. ms", "target meas. ms",
                   "energy mJ", "power W")


def summary_rows(report: dict) -> list[list[str]]:
    """One row of display strings per variant, in SUMMARY_COLUMNS order."""
    rows = []
    for v in report["variants"]:
        lat = v["latency_ms"]
        host = lat.get("host_measured")
        host_s = "—" if not host else f"{host['median']:.3f} / {host['p90']:.3f}"
        power = v.get("power_w")
        rows.append([v.get("target", report["target"]["name"]), v["name"], v["precision"],
                     fmt_si(v["params"]), fmt_si(v["macs"]), fmt_pct(v["accuracy"]),
                     fmt_bytes(v["weights_bytes"]), fmt_bytes(v["peak_activation_bytes"]),
                     host_s, fmt_float(lat.get("target_estimated")),
                     fmt_float(_median(lat.get("target_measured"))),
                     fmt_float(v["energy_mj"]["total"], 4),
                     "—" if not power else f"{power['total']:.4f} @ {power['fps']:g} fps"])
    return rows


def final_variant(report: dict) -> dict:
    """The variant the per-layer breakdown describes: the last one (the most processed)."""
    return report["variants"][-1]


def report_title(report: dict) -> str:
    """The heading of a report (one target) or of a comparison (several)."""
    t = report["target"]
    if report.get("comparison"):
        return "edgeprune comparison: " + ", ".join(t.get("targets", [t["name"]]))
    return f"edgeprune report: {t.get('display_name', t['name'])}"


def model_name(report: dict) -> str:
    model = report.get("model") or {}
    return str(model.get("arch") or model.get("path") or "")


def energy_section(report: dict) -> list[tuple]:
    rows = [[v.get("target", report["target"]["name"]), v["name"], v["precision"]]
            + [fmt_float(v["energy_mj"][k], 4) for k in ("compute", "weights_dram", "activations",
                                                         "total")]
            for v in report["variants"]]
    header = ["target", "variant", "precision", "compute mJ", "weights DRAM mJ",
              "activations mJ", "total mJ"]
    return [("h", 2, "Energy per inference (estimated)"), ("table", header, rows)]


def pruning_section(pruning: dict | None) -> list[tuple]:
    if not pruning:
        return []
    rows = [[str(k).replace("_", " "), fmt_int(v) if isinstance(v, int) else
             f"{v:.4f}" if isinstance(v, float) else str(v)]
            for k, v in pruning.items() if not isinstance(v, (list, dict))]
    out = [("h", 2, "Pruning"), ("table", ["", "value"], rows)]
    stages = pruning.get("stage_log") or []
    if stages and all(isinstance(s, dict) for s in stages):
        keys = list(dict.fromkeys(k for s in stages for k in s
                                  if not isinstance(s[k], (list, dict))))
        out += [("h", 3, "Stages"), ("table", keys, [[str(s.get(k, "")) for k in keys]
                                                     for s in stages])]
    return out


def layers_section(v: dict) -> list[tuple]:
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
    return ([("h", 2, f"Layers of {name}, by energy"), ("table", header, rows)]
            + ([("p", f"…and {more} more layers in report.json.")] if more > 0 else []))


def precision_section(choice: dict | None) -> list[tuple]:
    """Why the build runs at its precision (decided once, against the target)."""
    if not choice or not isinstance(choice, dict) or not choice.get("precision"):
        return []
    return [("h", 2, "Precision"), ("p", f"{choice['precision']} (asked for "
                                         f"{choice.get('requested')}): {choice.get('reason')}")]


def storage_section(q: dict | None) -> list[tuple]:
    """Deep Compression (precision ``shared``): the stored size beside fp32/fp16/int8, and
    what it does not change."""
    sizes = q.get("storage_bytes") if isinstance(q, dict) else None
    if not isinstance(sizes, dict) or "shared_huffman" not in sizes:
        return []
    names = [("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8 (per-tensor scale)"),
             ("shared_fixed_width", "shared, fixed-width indices"),
             ("shared_huffman", "shared + Huffman (packed file)")]
    rows = [[label, f"{sizes[k]:,}", f"{sizes['fp32'] / max(1, sizes[k]):.1f}x"]
            for k, label in names if isinstance(sizes.get(k), int)]
    return [("h", 2, "Stored size (Deep Compression)"),
            ("table", ["stored as", "bytes", "vs fp32"], rows),
            ("p", str(q.get("deployment_note", "")))]


def sections(report: dict) -> list[tuple]:
    """What follows the summary table: the precision's reason, the stored size (shared),
    energy, pruning, the final variant's layers."""
    return (precision_section(report.get("precision_choice"))
            + storage_section(report.get("quantization")) + energy_section(report)
            + pruning_section(report.get("pruning")) + layers_section(final_variant(report)))
