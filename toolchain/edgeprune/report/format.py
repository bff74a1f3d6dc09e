"""Number formatting and the summary rows shared by the Markdown, HTML and CLI renderings."""

from __future__ import annotations


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
