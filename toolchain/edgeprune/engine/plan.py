"""What an engine build decides, written down before anything runs: the plan (plan.json).

Both builders read the same plan (the TensorRT Python API in builder.py, trtexec in trtexec.py),
so the engine built here and the one the device script builds are the same engine.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.precision import ENGINE_PRECISIONS
from edgeprune.targets import Target
from edgeprune.tensorrt_caps import TensorRT, for_target

ENGINE_NAME, PLAN_NAME, SCRIPT_NAME = "model.engine", "plan.json", "build_engine.sh"
ENGINE_JSON, TIMING_CACHE, LOG_NAME = "engine.json", "timing.cache", "trtexec.log"
# What trtexec exports beside the engine when it builds or times one (engine/trt_profile.py reads
# them) and the device state the script records before it runs (engine/device_state.py).
TIMES_NAME, PROFILE_NAME, LAYERS_NAME = "trtexec.times.json", "trtexec.profile.json", \
    "trtexec.layers.json"
STATE_NAME = "device-state.txt"
WARMUP_MS, ITERATIONS = 2000, 200
DEFAULT_WORKSPACE_MIB = 1024


def plan_engine(onnx_path: str | Path, target: Target, precision: str, out_dir: str | Path, *,
                calib_cache: str | Path | None = None, dla_core: int | None = None,
                shapes: dict | None = None, compat=None) -> dict:
    """Decide every build setting for ``precision`` (already resolved against the target by the
    caller: it is not re-checked here); raises EdgepruneError.

    ``compat`` is the compatibility report of ``onnx_path`` when the caller already checked it
    (a build checks once); without one the graph is checked here. Paths in the plan are relative
    to ``root``: the folder that holds the ONNX, the engine folder and the cache, which the
    device script mounts into the container.
    """
    from edgeprune.compat import check_onnx

    onnx_path, out_dir = Path(onnx_path).resolve(), Path(out_dir).resolve()
    caps = for_target(target)
    if precision not in ENGINE_PRECISIONS:
        raise EdgepruneError(f"a TensorRT engine is built at {', '.join(ENGINE_PRECISIONS)}, not "
                             f"{precision!r} (a binary model is built at fp16 from its float "
                             "graph)")
    report = compat or check_onnx(onnx_path, target, precision, shapes=shapes)
    cache = Path(calib_cache).resolve() if calib_cache else None
    root = Path(os.path.commonpath([onnx_path.parent, out_dir]
                                   + ([cache.parent] if cache else [])))
    plan = {
        "target": target.name, "tensorrt": target.section("software")["tensorrt"],
        "container": target.section("software")["container"],
        "trtexec_path": target.section("software").get("trtexec", "trtexec"),
        "compute_capability": target.section("gpu")["compute_capability"],
        "root": str(root), "onnx": _rel(onnx_path, root), "engine_dir": _rel(out_dir, root),
        "engine": _rel(out_dir / ENGINE_NAME, root), "precision": precision,
        "workspace_mib": int(target.section("engine").get("workspace_mib",
                                                          DEFAULT_WORKSPACE_MIB)),
        "timing_cache": _rel(out_dir / TIMING_CACHE, root),
        "shapes": _shapes(shapes, report.dynamic_inputs), "ops_checked": report.ops_file,
        "decisions": [],
    }
    plan.update(_precision_flags(precision, report.int8_mode, caps, target, cache, root, plan))
    plan.update(_dla(dla_core, precision, target, plan))
    return plan


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _shapes(shapes: dict | None, dynamic: list[str]) -> dict:
    """{input: {"min": [...], "opt": [...], "max": [...]}} for the dynamic inputs only."""
    out = {}
    for name in dynamic:
        mn, opt, mx = shapes[name]
        out[name] = {"min": list(mn), "opt": list(opt), "max": list(mx)}
    return out


def _precision_flags(precision: str, int8_mode: str | None, caps: TensorRT, target: Target,
                     cache: Path | None, root: Path, plan: dict) -> dict:
    """The builder flags for ``precision`` on this TensorRT version, with the reasons."""
    note = plan["decisions"].append
    fp16_fast = "fp16" in target.fast_precisions
    flags = {"fp16": precision == "fp16", "int8": False, "strongly_typed": False,
             "int8_mode": int8_mode, "calibration_cache": None}
    if precision == "fp16":
        note("fp16: built from the fp32 ONNX with the FP16 builder flag")
    if precision != "int8":
        if cache:
            note("calibration cache ignored: precision is not int8")
        return flags
    if int8_mode == "explicit-qdq" and caps.strongly_typed_qdq:
        flags["strongly_typed"] = True
        note("int8 from the QDQ graph, strongly typed network (TensorRT 10: the Q/DQ nodes and "
             "tensor types decide precisions; no precision flags)")
    elif int8_mode == "explicit-qdq":
        flags.update(int8=True, fp16=fp16_fast)
        note(f"int8 from the QDQ graph (explicit quantization) on TensorRT {plan['tensorrt']}: "
             "INT8 flag" + (", FP16 for the layers left in float" if fp16_fast else ""))
    else:
        if not cache:
            raise EdgepruneError("int8 from a graph without Q/DQ nodes needs a calibration cache "
                                 "(--calib-cache FILE); or build from the QDQ ONNX")
        if not cache.is_file():
            raise EdgepruneError(f"calibration cache {cache} does not exist")
        flags.update(int8=True, fp16=fp16_fast, calibration_cache=_rel(cache, root))
        note(f"int8 by implicit calibration from the cache on TensorRT {plan['tensorrt']}"
             + (" (deprecated since TensorRT 10.1, removed in 11)"
               if caps.implicit_int8 == "deprecated" else ""))
    if int8_mode == "explicit-qdq" and cache:
        note("calibration cache not used: the graph's Q/DQ scales take precedence")
    return flags


def _dla(dla_core: int | None, precision: str, target: Target, plan: dict) -> dict:
    if dla_core is None:
        return {"dla_core": None, "gpu_fallback": False}
    dla = target.section("dla")
    if not 0 <= dla_core < dla.get("cores", 0):
        raise EdgepruneError(f"{target.name} has {dla.get('cores', 0)} DLA cores; --dla-core "
                             f"{dla_core} does not exist" + ("" if dla.get("cores") else
                                                              ": leave --dla-core out"))
    if precision not in dla.get("precisions", []):
        raise EdgepruneError(f"the DLA runs {', '.join(dla.get('precisions', []))} only, not "
                             f"{precision}; pick one of those or leave --dla-core out")
    plan["decisions"].append(f"DLA core {dla_core} with GPU fallback for layers the DLA lacks")
    return {"dla_core": dla_core, "gpu_fallback": True}


def batch_shapes(onnx_path: str | Path, spec: str) -> dict:
    """Optimization profile for a dynamic-batch graph from "MIN,OPT,MAX" (e.g. "1,8,32"):
    {input: (min_shape, opt_shape, max_shape)} with the other dimensions from the graph."""
    import onnx

    try:
        batches = [int(b) for b in spec.split(",")]
        if len(batches) != 3 or not 0 < batches[0] <= batches[1] <= batches[2]:
            raise ValueError
    except ValueError:
        raise EdgepruneError(f"--batch {spec!r} must be MIN,OPT,MAX with 0 < MIN <= OPT <= MAX, "
                             "e.g. 1,8,32") from None
    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in weights:
            continue
        dims = inp.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims[1:]):
            raise EdgepruneError(f"input {inp.name!r} is dynamic beyond the batch dimension; "
                                 "export it with a fixed input size")
        rest = [d.dim_value for d in dims[1:]]
        shapes[inp.name] = tuple([b, *rest] for b in batches)
    return shapes
