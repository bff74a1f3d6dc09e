"""``edgeprune targets fit``: refit a target's roofline factors from per-layer device profiles.

The estimate of a node (profile/latency.py) is ``max(C / efficiency, M) + launch_overhead`` for
each node that launches a kernel, with C the compute seconds at the precision's peak and M the
memory seconds. A device layer measured by trtexec fuses several ONNX nodes, so one sample is one
device layer: its measured time against the sum of its nodes' estimates. The factors (one
efficiency per precision measured, one launch overhead) minimise the squared error over every
sample (least squares: a grid and golden-section search over each efficiency, the launch
overhead in closed form, alternated until they settle). Layers joined to no ONNX node
(reformatting, unnamed shuffles) are left out: the estimate has no term for them.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.targets import Target

EFF_RANGE = (0.005, 1.0)


@dataclass
class Samples:
    """Node-level terms (compute at efficiency 1, memory; seconds) grouped by device layer."""

    compute: list[float] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    precision: list[str] = field(default_factory=list)  # per node
    measured_s: list[float] = field(default_factory=list)  # per group
    launches: list[int] = field(default_factory=list)  # per group: nodes that launch a kernel
    group_precision: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)

    def add_group(self, terms: list[tuple[float, float, str]], measured_ms: float) -> None:
        g = len(self.measured_s)
        for c, m, p in terms:
            self.compute.append(c)
            self.memory.append(m)
            self.group.append(g)
            self.precision.append(p)
        self.measured_s.append(measured_ms / 1e3)
        self.launches.append(len(terms))
        ps = [p for *_, p in terms]
        self.group_precision.append(max(dict.fromkeys(ps), key=ps.count))


def collect(target: Target, profiles: list[Path]) -> Samples:
    """Samples from each build directory (or report.json) measured on ``target``."""
    from edgeprune.report import read_report

    samples = Samples()
    for path in profiles:
        folder = Path(path).parent if Path(path).suffix == ".json" else Path(path)
        report = read_report(folder)
        if report["target"]["name"] != target.name:
            raise EdgepruneError(f"{folder} was built for {report['target']['name']}, not "
                                 f"{target.name}; fit each target from its own profiles")
        measured = [v for v in report["variants"] if (v.get("device") or {}).get("layers")]
        if not measured:
            raise EdgepruneError(f"{folder} holds no per-layer device profile; run `edgeprune "
                                 "profile BUILD_DIR --engine ...` (or --trtexec-dir) first")
        for v in measured:
            _add_variant(samples, folder, v, target)
            samples.sources.append(f"{folder} ({v['name']}, {v['precision']})")
            samples.states.append(v["device"].get("state_text", ""))
    if not samples.measured_s:
        raise EdgepruneError("no device layer could be joined to an ONNX node: nothing to fit")
    return samples


def _add_variant(samples: Samples, folder: Path, v: dict, target: Target) -> None:
    from edgeprune.onnx_file import read_onnx
    from edgeprune.profile.accounting import account
    from edgeprune.profile.latency import node_terms

    onnx = folder / Path(v.get("onnx") or "").name
    if not onnx.is_file():
        raise EdgepruneError(f"{onnx} is not there: the fit needs the ONNX model the engine was "
                             "built from, in the build directory")
    nodes = {n.name: n for n in account(read_onnx(onnx), v["precision"]).nodes}
    claimed: set[str] = set()
    for row in v["device"]["layers"]:
        new = [n for n in row["nodes"] if n not in claimed and n in nodes]
        claimed.update(new)
        launching = [nodes[n] for n in new if not nodes[n].fused]
        if row["kind"] != "layer" or not launching:
            continue
        samples.add_group([(*node_terms(n, target), n.precision) for n in launching],
                          row["measured_ms"])


# ---------------------------------------------------------------- least squares


def predict(s: Samples, eff: dict[str, float], launch_s: float) -> np.ndarray:
    c, m = np.asarray(s.compute), np.asarray(s.memory)
    e = np.asarray([eff[p] for p in s.precision])
    per_node = np.maximum(c / e, m)
    return (np.bincount(s.group, per_node, minlength=len(s.measured_s))
            + launch_s * np.asarray(s.launches))


def fit(s: Samples, start_eff: dict[str, float], start_launch_s: float,
        rounds: int = 30) -> tuple[dict[str, float], float]:
    """(efficiency per precision, launch overhead in s) minimising the squared error."""
    eff = {p: start_eff.get(p, 0.5) for p in dict.fromkeys(s.precision)}
    launch = start_launch_s
    t, k = np.asarray(s.measured_s), np.asarray(s.launches, float)
    for _ in range(rounds):
        before = (dict(eff), launch)
        for p in eff:
            eff[p] = _best_eff(s, eff, launch, p)
        rest = t - predict(s, eff, 0.0)
        launch = max(0.0, float(rest @ k / (k @ k)))
        if before == (eff, launch):
            break
    return eff, launch


def _sse(s: Samples, eff: dict, launch: float) -> float:
    return float(((predict(s, eff, launch) - np.asarray(s.measured_s)) ** 2).sum())


def _best_eff(s: Samples, eff: dict, launch: float, p: str) -> float:
    """Grid over log efficiency, then golden-section refinement around the best point. Where
    the error is flat (every node memory-bound over a range: the efficiency changes nothing
    there), the point of the flat minimum nearest the current value is kept."""
    grid = np.geomspace(*EFF_RANGE, 200)
    errs = np.asarray([_sse(s, eff | {p: g}, launch) for g in grid])
    flat = np.flatnonzero(errs <= errs.min() * (1 + 1e-9) + 1e-30)
    if len(flat) > 1:  # a plateau: the current value if on it, else its nearest edge
        return float(np.clip(eff[p], grid[flat[0]], grid[flat[-1]]))
    i = int(flat[0])
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _sse(s, eff | {p: a}, launch) <= _sse(s, eff | {p: b}, launch):
            hi = b
        else:
            lo = a
    return float((lo + hi) / 2)


def compute_bound(s: Samples, eff: dict[str, float]) -> dict[str, int]:
    """Nodes per precision whose compute side wins at ``eff``: with none, the data say nothing
    about that precision's efficiency (it stays what it was)."""
    c, m = np.asarray(s.compute), np.asarray(s.memory)
    e = np.asarray([eff[p] for p in s.precision])
    bound = c / e > m
    return {p: int(sum(b for b, q in zip(bound, s.precision) if q == p)) for p in eff}


# ---------------------------------------------------------------- the refitted target file


def fit_target(target: Target, profiles: list[Path], out: Path) -> dict:
    """Refit ``target``'s [estimate] from ``profiles``; write the target file with the new
    section to ``out`` (usable as --target-file); return what was fitted."""
    from edgeprune.atomic import write_text
    from edgeprune.profile.latency import estimate_factors
    from edgeprune.targets import load_target_file

    s = collect(target, profiles)
    start = {p: estimate_factors(target, p)[0] for p in dict.fromkeys(s.precision)}
    eff, launch = fit(s, start, estimate_factors(target, s.precision[0])[1])
    rmse = float(np.sqrt(_sse(s, eff, launch) / len(s.measured_s))) * 1e3
    before = float(np.sqrt(_sse(s, start, estimate_factors(target, s.precision[0])[1])
                           / len(s.measured_s))) * 1e3
    result = {"efficiency": eff, "launch_overhead_us": launch * 1e6, "samples":
              len(s.measured_s), "rmse_ms": rmse, "rmse_ms_before": before,
              "compute_bound_nodes": compute_bound(s, eff),
              "sources": s.sources, "device_states": sorted(set(s.states))}
    text = target.path.read_text(encoding="utf-8")
    write_text(out, _without_estimate(text) + _estimate_toml(result, s))
    load_target_file(out)  # what was written is a valid target file
    return result


def _without_estimate(text: str) -> str:
    """The target file's text without its [estimate] section (the fit replaces it)."""
    out, skip = [], False
    for line in text.splitlines():
        if re.match(r"^\s*\[", line):
            skip = re.match(r"^\s*\[estimate\]", line) is not None
        if not skip:
            out.append(line)
    return "\n".join(out).rstrip() + "\n\n"


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bound_note(r: dict, p: str) -> str:
    n = r["compute_bound_nodes"][p]
    return (f"  # {n} compute-bound nodes" if n else
            "  # not determined: every node memory-bound (kept from before)")


def _estimate_toml(r: dict, s: Samples) -> str:
    precisions = sorted(r["efficiency"], key=lambda p: -s.group_precision.count(p))
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
    lines = [f"[estimate]                      # refitted by `edgeprune targets fit` on {when}",
             f"efficiency = {r['efficiency'][precisions[0]]:.4f}",
             *(f"efficiency_{p} = {r['efficiency'][p]:.4f}" + _bound_note(r, p)
               for p in precisions),
             f"launch_overhead_us = {r['launch_overhead_us']:.3f}",
             f"fitted_samples = {r['samples']}  # device layers joined to ONNX nodes",
             f"fitted_rmse_ms = {r['rmse_ms']:.5f}  # per device layer; "
             f"{r['rmse_ms_before']:.5f} with the factors before",
             "fitted_from = [" + ", ".join(_toml_str(x) for x in r["sources"]) + "]",
             "fitted_device_states = [" + ", ".join(_toml_str(x) for x in r["device_states"])
             + "]"]
    return "\n".join(lines) + "\n"
