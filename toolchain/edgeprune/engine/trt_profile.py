"""What trtexec measured on the device, read from the JSON files it exports, and joined to
edgeprune's own per-layer estimate.

The formats, per release (trtexec's samples/common/sampleReporting.cpp and the engine
inspector):

- ``--exportTimes``: a list with one record per run: ``startComputeMs``/``endComputeMs`` (ms since
  the start, warm-up included), ``computeMs``, ``latencyMs`` (H2D + compute + D2H, the compute
  alone with ``--noDataTransfers``); 8.2 adds ``endToEndMs``. Before 8.5 the warm-up runs are in
  the list too: as trtexec itself does, a run counts when it starts after the warm-up.
- ``--exportProfile``: ``[{"count": runs}, {"name", "timeMs" (total), "averageMs", "percentage"},
  ...]``, with ``medianMs`` from 8.4. Names are written unescaped (a quote in a layer name makes
  the file invalid JSON), so a line-by-line reading is the fallback.
- ``--exportLayerInfo``: ``{"Layers": [...], "Bindings": [...]}``; each layer is its name alone
  unless the engine was built with detailed profiling verbosity, then an object with ``Name``,
  ``LayerType``, ``Inputs``/``Outputs``, ``TacticName``... and, from 8.6, ``Metadata``:
  ``[ONNX Layer: node]`` once per ONNX node the layer implements, joined by a control character.

TensorRT fuses ONNX nodes into one layer ("/conv1/Conv + /relu/Relu", "PWN(/act/Sigmoid,
/act/Mul)", "{ForeignNode[/first...last]}" for a Myelin region): a device layer is joined to
the ONNX nodes its metadata lists, else to the node names its own name holds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError

_ONNX_LAYER = re.compile(r"\[ONNX Layer: (.*?)\]")
_FOREIGN = re.compile(r"\{ForeignNode\[(.*?)\.\.\.(.*?)\]\}")
_NAME_PARTS = re.compile(r"\s\+\s|PWN\(|\)|,\s*")
_PROFILE_LINE = re.compile(r'"name"\s*:\s*"(.*)",\s*"timeMs"\s*:\s*([-0-9.eE+]+),\s*'
                           r'"averageMs"\s*:\s*([-0-9.eE+]+)(?:,\s*"medianMs"\s*:\s*([-0-9.eE+]+))?'
                           r',\s*"percentage"\s*:\s*([-0-9.eE+]+)')
_REFORMAT = ("Reformatting CopyNode", "Reformat")


def read_json_file(path: str | Path, what: str):
    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"{path} does not exist: trtexec writes it with {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        raise EdgepruneError(f"{path} is not the JSON trtexec writes with {what} ({e.msg}); "
                             "run the command again") from None


# ---------------------------------------------------------------- --exportTimes


def parse_times(records: list, warmup_ms: float = 0.0) -> dict:
    """Latency statistics (ms) of the timed runs and the wall seconds they span."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise EdgepruneError("the --exportTimes file is not a list of runs")
    timed = [r for r in records if float(r.get("startComputeMs", warmup_ms)) >= warmup_ms]
    if not timed:
        raise EdgepruneError("trtexec exported no timed runs (all were warm-up); raise "
                             "--iterations")
    t = np.asarray([float(r.get("latencyMs", r.get("computeMs"))) for r in timed])
    start = min(float(r.get("startComputeMs", 0.0)) for r in timed)
    end = max(float(r.get("endComputeMs", 0.0)) for r in timed)
    p10, median, p90 = np.percentile(t, [10, 50, 90])
    return {"median": float(median), "p90": float(p90), "p10": float(p10),
            "spread": float(p90 - p10), "mean": float(t.mean()), "min": float(t.min()),
            "runs": int(t.size), "wall_s": max(end - start, float(t.sum())) / 1000.0,
            "warmup_runs_dropped": len(records) - len(timed)}


# ---------------------------------------------------------------- --exportProfile


def parse_profile(text: str) -> tuple[int, list[dict]]:
    """(profiled runs, [{name, total_ms, average_ms, median_ms (None before 8.4), percentage}])."""
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = None
    if records is None:  # an unescaped quote or backslash in a layer name: read it line by line
        rows = [_row_from_match(m) for m in _PROFILE_LINE.finditer(text)]
        count = re.search(r'"count"\s*:\s*(\d+)', text)
        if not rows or not count:
            raise EdgepruneError("the --exportProfile file is neither JSON nor trtexec's layout")
        return int(count.group(1)), rows
    if not isinstance(records, list) or not records or "count" not in records[0]:
        raise EdgepruneError("the --exportProfile file does not start with trtexec's "
                             '{"count": runs} record')
    rows = [{"name": str(r["name"]), "total_ms": float(r["timeMs"]),
             "average_ms": float(r["averageMs"]),
             "median_ms": float(r["medianMs"]) if "medianMs" in r else None,
             "percentage": float(r.get("percentage", 0.0))}
            for r in records[1:] if isinstance(r, dict) and "name" in r]
    return int(records[0]["count"]), rows


def _row_from_match(m: re.Match) -> dict:
    return {"name": m.group(1), "total_ms": float(m.group(2)), "average_ms": float(m.group(3)),
            "median_ms": float(m.group(4)) if m.group(4) else None,
            "percentage": float(m.group(5))}


# ---------------------------------------------------------------- --exportLayerInfo


def parse_layer_info(doc) -> dict[str, dict]:
    """Layer name -> {type, onnx_nodes (from Metadata, 8.6+), tactic}; names only when the engine
    was built without detailed profiling verbosity."""
    layers = doc.get("Layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise EdgepruneError('the --exportLayerInfo file has no "Layers" list')
    out = {}
    for layer in layers:
        if isinstance(layer, str):
            out[layer] = {"type": None, "onnx_nodes": None, "tactic": None}
        elif isinstance(layer, dict) and "Name" in layer:
            meta = layer.get("Metadata")
            out[str(layer["Name"])] = {
                "type": layer.get("LayerType"),
                "onnx_nodes": _ONNX_LAYER.findall(meta) if isinstance(meta, str) else None,
                "tactic": layer.get("TacticName")}
    return out


# ---------------------------------------------------------------- the join


def nodes_of(name: str, info: dict | None, order: dict[str, int], names: list[str]) -> list[str]:
    """The ONNX nodes a device layer implements: its metadata's, else the known node names in
    its own name (a ForeignNode range expands along the graph's order)."""
    if info and info.get("onnx_nodes"):
        return [n for n in info["onnx_nodes"] if n in order]
    found = []
    for first, last in _FOREIGN.findall(name):
        if first in order and last in order:
            found += names[order[first]:order[last] + 1]
    parts = [p.strip() for p in _NAME_PARTS.split(_FOREIGN.sub("", name))]
    found += [p for p in parts if p in order]
    return list(dict.fromkeys(found))


def is_reformat(name: str, info: dict | None) -> bool:
    return name.startswith(_REFORMAT[0]) or bool(info and info.get("type") in _REFORMAT)


def join_layers(profile: list[dict], layer_info: dict[str, dict],
                estimate: list[dict]) -> dict:
    """Each device layer beside the estimate of the ONNX nodes it implements.

    ``estimate`` is a report variant's ``layers`` (graph order, with ``latency_estimated_ms``).
    A node claimed by two device layers counts in the first one's estimate only. Reformatting
    layers (format conversions TensorRT inserts) have no ONNX node: their time is summed apart.
    """
    names = [lay["name"] for lay in estimate]
    order = {n: i for i, n in enumerate(names)}
    est = {lay["name"]: float(lay.get("latency_estimated_ms") or 0.0) for lay in estimate}
    claimed: set[str] = set()
    rows = []
    for p in profile:
        info = layer_info.get(p["name"])
        ms = p["median_ms"] if p["median_ms"] is not None else p["average_ms"]
        kind = "reformat" if is_reformat(p["name"], info) else "layer"
        nodes = [] if kind == "reformat" else nodes_of(p["name"], info, order, names)
        new = [n for n in nodes if n not in claimed]
        claimed.update(new)
        rows.append({"name": p["name"], "kind": kind if nodes or kind == "reformat" else "other",
                     "type": (info or {}).get("type"), "measured_ms": ms, "nodes": nodes,
                     "estimated_ms": sum(est[n] for n in new) if nodes else None})
    unclaimed = [n for n in names if n not in claimed and est[n] > 0]
    return {"layers": rows, "summary": _summary(rows, unclaimed, est)}


def _summary(rows: list[dict], unclaimed: list[str], est: dict[str, float]) -> dict:
    def total(kind: str) -> float:
        return float(sum(r["measured_ms"] for r in rows if r["kind"] == kind))

    return {"device_layers": len(rows),
            "joined_layers": sum(r["kind"] == "layer" for r in rows),
            "measured_joined_ms": total("layer"), "reformat_ms": total("reformat"),
            "other_ms": total("other"),
            "estimated_joined_ms": float(sum(r["estimated_ms"] or 0.0 for r in rows)),
            "nodes_not_found": unclaimed[:50],
            "estimated_not_found_ms": float(sum(est[n] for n in unclaimed))}


# ---------------------------------------------------------------- a folder of trtexec files


def join_layers_in(folder: str | Path, estimate: list[dict]) -> dict | None:
    """The per-layer profile in ``folder`` (and its layer information, when there) joined to
    ``estimate``; None when trtexec exported no profile there."""
    from edgeprune.engine.plan import LAYERS_NAME, PROFILE_NAME

    folder = Path(folder)
    if not (folder / PROFILE_NAME).is_file():
        return None
    runs, profile = parse_profile((folder / PROFILE_NAME).read_text(encoding="utf-8",
                                                                    errors="replace"))
    info = (parse_layer_info(read_json_file(folder / LAYERS_NAME, "--exportLayerInfo"))
            if (folder / LAYERS_NAME).is_file() else {})
    return join_layers(profile, info, estimate) | {"profiled_runs": runs}


def read_trtexec_dir(folder: str | Path, estimate: list[dict], *, warmup_ms: float) -> dict:
    """Everything a folder of trtexec's exports holds: latency (required), the per-layer
    profile and layer information (joined to ``estimate``) when present, the TensorRT version
    from trtexec.log."""
    from edgeprune.engine.plan import LOG_NAME, TIMES_NAME
    from edgeprune.tensorrt_caps import version_from_log

    folder = Path(folder)
    out = {"latency_ms": parse_times(read_json_file(folder / TIMES_NAME, "--exportTimes"),
                                     warmup_ms)}
    log = folder / LOG_NAME
    out["tensorrt"] = (version_from_log(log.read_text(encoding="utf-8", errors="replace"))
                       if log.is_file() else None)
    out["layers"] = join_layers_in(folder, estimate)
    return out
