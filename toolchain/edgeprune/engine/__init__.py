"""TensorRT engines for a target: build one on the device, or write the script that will.

``make_engine`` always writes ``plan.json`` (every decision: precision flags, int8 route, DLA,
workspace, shapes) and ``build_engine.sh`` (the exact trtexec command for the target's TensorRT
version, run directly on the device or through ``docker run --runtime nvidia`` in the target's
container). It then builds ``model.engine`` + ``engine.json`` itself when it can: with the
TensorRT Python API where ``tensorrt`` imports, or with the device's trtexec, and only on a GPU
of the target's compute capability, since an engine runs only on the GPU and TensorRT version it
was built with. Everywhere else the result is the script (always the case on the dev machines).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeprune.engine.plan import ENGINE_NAME, PLAN_NAME, SCRIPT_NAME, plan_engine
from edgeprune.targets import Target

__all__ = ["ENGINE_NAME", "PLAN_NAME", "SCRIPT_NAME", "EngineResult", "make_engine", "plan_engine"]


@dataclass
class EngineResult:
    kind: str   # "engine" (model.engine was built here) | "script" (build_engine.sh for the device)
    path: Path  # the engine, or the script
    plan: dict  # what plan.json holds

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "plan": self.plan}

    @classmethod
    def from_dict(cls, d: dict) -> EngineResult:
        return cls(d["kind"], Path(d["path"]), d["plan"])


def make_engine(onnx_path: str | Path, target: Target, precision: str, out_dir: str | Path,
                calib_cache: str | Path | None = None, dla_core: int | None = None, *,
                shapes: dict | None = None, build: bool = True, compat=None) -> EngineResult:
    """Plan the engine of ``onnx_path`` for ``target`` at ``precision`` (resolved by the caller),
    write plan.json and build_engine.sh into ``out_dir``, and build the engine when this machine
    can (``build=False``: never). ``compat``: the graph's compatibility report, if checked."""
    from edgeprune.atomic import write_json
    from edgeprune.engine.accuracy import copy_script
    from edgeprune.engine.builder import build_here
    from edgeprune.engine.trtexec import write_build_script
    from edgeprune.onnx_file import read_onnx

    read_onnx(onnx_path)  # a checkpoint, an empty file, external data: refused before any work
    out_dir = Path(out_dir)
    plan = plan_engine(onnx_path, target, precision, out_dir, calib_cache=calib_cache,
                       dla_core=dla_core, shapes=shapes, compat=compat)
    script = write_build_script(plan, target, out_dir)
    copy_script(out_dir)  # the engine's top-1 on the device, with its system Python
    built, reason = build_here(plan, target, out_dir) if build else (None, "build=False")
    plan["built_here"] = built
    if not built:
        plan["decisions"].append(f"not built here ({reason}): run {SCRIPT_NAME} on the device")
    write_json(out_dir / PLAN_NAME, plan)
    if built:
        return EngineResult("engine", out_dir / ENGINE_NAME, plan)
    return EngineResult("script", script, plan)
