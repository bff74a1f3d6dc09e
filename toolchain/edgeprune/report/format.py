"""Number formatting, the summary rows and the report's sections, shared by the Markdown, HTML
and CLI renderings.

A section is a list of blocks of plain text: ``("h", level, text)``, ``("p", text)`` or
``("table", header, rows)``. Each renderer escapes every string it takes from a block for its
own format, so a name in report.json (which anyone may have edited) is always shown as text.
"""

from __future__ import annotations

LEGEND = ("Accuracy: top-1 on the data's test split (never used for pruning decisions). Latency: "
          "host = ONNX Runtime CPU, batch 1, measured; target est. = per-layer roofline from the "
          "target file at the GPU's maximum clock; target meas. = on the device. Energy and "
          "power are estimates (45 nm, Horowitz ISSCC 2014): est. dynamic power = estimated "
          "energy per inference × frame rate, not board power; board power appears only where "
          "it was measured on the device.")
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


SUMMARY_COLUMNS = ("target", "variant", "precision", "params", "MACs", "accuracy (test)",
                   "weights", "peak act.", "host ms (med / p90)", "target est. ms",
                   "target meas. ms", "est. energy mJ (45 nm)", "est. dynamic power W (45 nm)")
BOARD_POWER = "board power W (measured)"


def summary_columns(report: dict) -> tuple[str, ...]:
    """The summary's columns: board power only when some variant measured it."""
    return SUMMARY_COLUMNS + ((BOARD_POWER,) if _any_board_power(report) else ())


def _board_power(v: dict) -> float | None:
    return (v["latency_ms"].get("target_measured") or {}).get("power_w")


def _any_board_power(report: dict) -> bool:
    return any(_board_power(v) is not None for v in report["variants"])


def summary_rows(report: dict) -> list[list[str]]:
    """One row of display strings per variant, in summary_columns(report) order."""
    board = _any_board_power(report)
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
                     "—" if not power else f"{power['total']:.4f} at {power['fps']:g} fps"]
                    + ([fmt_float(_board_power(v), 2)] if board else []))
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
    header = ["target", "variant", "precision", "est. compute mJ", "est. weights DRAM mJ",
              "est. activations mJ", "est. total mJ"]
    return [("h", 2, "Energy per inference (estimated, 45 nm)"), ("table", header, rows)]


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
    removed = [r for r in pruning.get("removed_units") or [] if isinstance(r, dict)]
    if removed:
        out += [("h", 3, "Removed units"), ("table", ["unit", "removed in stage"],
                                            [[str(r.get("unit")), str(r.get("stage"))]
                                             for r in removed])]
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
              "activations r+w", "est. energy mJ", "est. ms"]
    more = len(layers) - LAYER_ROWS
    name = f"{v.get('target') + ' / ' if v.get('target') else ''}{v['name']} ({v['precision']})"
    return ([("h", 2, f"Layers of {name}, by energy"), ("table", header, rows)]
            + ([("p", f"…and {more} more layers in report.json.")] if more > 0 else []))


def effects_section(report: dict) -> list[tuple]:
    """Pruning's and quantization's effects told apart, per target: a build that prunes and
    quantizes (fp16, int8) also profiles the original at that precision, so the four variants
    original, original-P, pruned, pruned-P are compared pairwise."""
    out = []
    groups: dict[str, dict[str, dict]] = {}
    for v in report["variants"]:
        groups.setdefault(v.get("target", report["target"]["name"]), {})[v["name"]] = v
    for target, vs in groups.items():
        quantized = [n[len("pruned-"):] for n in vs if n.startswith("pruned-")
                     and f"original-{n[len('pruned-'):]}" in vs]
        if "original" not in vs or "pruned" not in vs or not quantized:
            continue
        p = quantized[0]
        pairs = [("pruning (fp32)", "original", "pruned"),
                 (f"quantization to {p} (unpruned)", "original", f"original-{p}"),
                 (f"pruning (at {p})", f"original-{p}", f"pruned-{p}"),
                 (f"both: pruning + {p}", "original", f"pruned-{p}")]
        rows = [[label, f"{a} → {b}", _points(vs[a], vs[b]),
                 _ratio(_est_ms(vs[a]), _est_ms(vs[b])),
                 _ratio(vs[a]["weights_bytes"], vs[b]["weights_bytes"]),
                 _ratio(vs[a]["energy_mj"]["total"], vs[b]["energy_mj"]["total"])]
                for label, a, b in pairs]
        where = f" ({target})" if len(groups) > 1 else ""
        out += [("h", 2, f"Pruning vs quantization{where}"),
                ("table", ["effect", "variants", "accuracy Δ (points)", "target est. ms ×",
                           "weights ×", "est. energy ×"], rows)]
    return out


def _est_ms(v: dict) -> float | None:
    return v["latency_ms"].get("target_estimated")


def _points(a: dict, b: dict) -> str:
    if a.get("accuracy") is None or b.get("accuracy") is None:
        return "—"
    return f"{100 * (b['accuracy'] - a['accuracy']):+.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or b is None else f"{b / a:.3f}"


def precision_section(choice: dict | None) -> list[tuple]:
    """Why the build runs at its precision (decided once, against the target)."""
    if not choice or not isinstance(choice, dict) or not choice.get("precision"):
        return []
    return [("h", 2, "Precision"), ("p", f"{choice['precision']} (asked for "
                                         f"{choice.get('requested')}): {choice.get('reason')}")]


def device_section(report: dict) -> list[tuple]:
    """What the device measured (``edgeprune profile BUILD_DIR --engine/--trtexec-dir``), the
    state it ran in, and the clock the estimate assumed; nothing for a report without either."""
    measured = [v for v in report["variants"] if v.get("device")]
    gpu = (report.get("target") or {}).get("gpu") or {}
    if not measured and not gpu.get("max_clock_mhz"):
        return []
    out = [("h", 2, "On the device")]
    if gpu.get("max_clock_mhz"):
        out.append(("p", f"The target estimate assumes the GPU at {gpu['max_clock_mhz']:g} MHz "
                         "(the target file's [gpu] max_clock_mhz) and the [estimate] factors of "
                         "the target file; the device figures below were measured at the state "
                         "beside them."))
    if not measured:
        out.append(("p", "Not measured on the device yet: run `edgeprune profile BUILD_DIR "
                         "--engine engine/model.engine` there (docker/README.md)."))
        return out
    rows = []
    for v in measured:
        d, meas = v["device"], v["latency_ms"].get("target_measured") or {}
        acc = d.get("accuracy") or {}
        rows.append([v.get("target", report["target"]["name"]), v["name"], v["precision"],
                     f"{fmt_float(meas.get('median'))} / {fmt_float(meas.get('p90'))}",
                     fmt_float(v["latency_ms"].get("target_estimated")),
                     fmt_float(d.get("power_w")), fmt_float(d.get("energy_mj"), 4),
                     fmt_pct(acc.get("engine")), fmt_pct(acc.get("host_onnxruntime")),
                     ("FLAGGED " if acc.get("flagged") else "") + fmt_pct(acc.get("gap"))
                     if acc else "—", d.get("state_text", "")])
    out.append(("table", ["target", "variant", "precision", "meas. ms (med / p90)", "est. ms",
                          "power W", "energy mJ", "engine top-1", "host top-1", "gap",
                          "device state"], rows))
    for v in measured:
        if v["device"].get("accuracy", {}).get("flagged"):
            a = v["device"]["accuracy"]
            out.append(("p", f"{v['name']}: the engine's top-1 is {100 * a['gap']:.2f} points "
                             f"below ONNX Runtime's on the host (more than "
                             f"{100 * a['max_gap']:.2f}): "
                             + ("check the int8 calibration." if v["precision"] == "int8" else
                                "check the engine's precision (fp16 range, layers TensorRT "
                                "ran in another precision).")))
    return out + device_layers_section(measured[-1])


def device_layers_section(v: dict) -> list[tuple]:
    """The device's layers, slowest first, beside the estimate of the ONNX nodes they fuse."""
    layers = sorted(v["device"].get("layers") or [], key=lambda r: -r["measured_ms"])
    if not layers:
        return []
    rows = [[r["name"], r["kind"], fmt_float(r["measured_ms"], 4),
             fmt_float(r.get("estimated_ms"), 4), ", ".join(r["nodes"][:6])
             + (" …" if len(r["nodes"]) > 6 else "")] for r in layers[:LAYER_ROWS]]
    s = v["device"].get("layers_summary") or {}
    note = (f"Joined {s.get('joined_layers')} of {s.get('device_layers')} device layers to ONNX "
            f"nodes; reformatting {fmt_float(s.get('reformat_ms'), 4)} ms, unjoined "
            f"{fmt_float(s.get('other_ms'), 4)} ms.") if s else ""
    return [("h", 3, f"Device layers of {v['name']} (per-run ms), slowest first"),
            ("table", ["device layer", "kind", "meas. ms", "est. ms", "ONNX nodes"], rows)] \
        + ([("p", note)] if note else [])


def normalization_section(model: dict | None) -> list[tuple]:
    """Which mean/std the inputs were normalized with, and where they came from."""
    norm = (model or {}).get("normalization") if isinstance(model, dict) else None
    if not isinstance(norm, dict) or not norm.get("mean"):
        return []
    fmt = lambda xs: ", ".join(f"{float(x):.4f}" for x in xs)  # noqa: E731
    return [("h", 2, "Input normalization"),
            ("p", f"mean ({fmt(norm['mean'])}), std ({fmt(norm.get('std') or [])}), from "
                  f"{normalization_origin(norm.get('source'))}")]


def normalization_origin(source) -> str:
    """Where the mean/std came from, in words (edgeprune.normalization)."""
    from edgeprune.normalization import SOURCE_CHECKPOINT, SOURCE_USER

    if not source or source == SOURCE_CHECKPOINT:
        return "the checkpoint (the model file stores them)"
    if source == SOURCE_USER:
        return "--mean/--std (the model file stores none)"
    return (f"{source} (the data's default: the model file stores none and no --mean/--std "
            "was given)")


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
    pruning's and quantization's effects apart, the input normalization, energy, pruning, what
    the device measured, the final variant's layers."""
    return (precision_section(report.get("precision_choice"))
            + storage_section(report.get("quantization")) + effects_section(report)
            + normalization_section(report.get("model")) + energy_section(report)
            + pruning_section(report.get("pruning")) + device_section(report)
            + layers_section(final_variant(report)))
