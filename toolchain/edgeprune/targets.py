"""Device targets: one TOML file per device in targets/, facts with their sources.

``load_target("jetson-nano")`` returns a :class:`Target`; ``list_targets()`` the names. Device
facts live in the files, never in code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.paths import targets_dir
from edgeprune.precision import PRECISIONS


@dataclass(frozen=True)
class Target:
    name: str
    raw: dict  # the whole TOML document
    path: Path

    def section(self, key: str) -> dict:
        return self.raw.get(key, {})

    @property
    def display_name(self) -> str:
        return self.raw.get("display_name", self.name)

    @property
    def runtime(self) -> str:
        """tensorrt (Jetson GPU targets) or onnxruntime-cpu (host-cpu)."""
        return self.raw["runtime"]

    @property
    def fast_precisions(self) -> list[str]:
        return list(self.section("precisions").get("fast", ["fp32"]))

    @property
    def peak_ops_per_s(self) -> dict[str, float]:
        """Dense peak throughput in operations per second, by precision (0 = no fast path)."""
        peak = self.section("peak")
        return {"fp32": peak.get("fp32_tflops", 0.0) * 1e12,
                "fp16": peak.get("fp16_tflops", 0.0) * 1e12,
                "int8": peak.get("int8_tops", 0.0) * 1e12}

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.section("memory")["bandwidth_gbps"] * 1e9

    @property
    def on_chip_bytes(self) -> int:
        return int(self.section("memory").get("on_chip_kib", 0) * 1024)


def list_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


@cache
def load_target(name: str) -> Target:
    """The target called ``name`` in targets/: a name, never a path (a user's own file goes
    through :func:`load_target_file`, explicitly)."""
    known = list_targets()
    if not isinstance(name, str) or name not in known:
        hint = (": --target takes a name; give your own file with --target-file PATH"
                if isinstance(name, str) and ("/" in name or name.endswith(".toml")) else "")
        raise EdgepruneError(f"unknown target {name!r}; choose one of: {', '.join(known)} "
                             f"(run `edgeprune targets` to see them){hint}")
    return _read_target(targets_dir() / f"{name}.toml", name)


def load_target_file(path: str | Path) -> Target:
    """A user's target file (``--target-file``), checked against the same schema as targets/."""
    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"target file {path} does not exist; give a TOML file laid out as "
                             "targets/jetson-nano.toml")
    return _read_target(path.resolve(), None)


def _read_target(path: Path, name: str | None) -> Target:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EdgepruneError(f"target file {path} is not valid TOML ({e})") from None
    validate_target(raw, path)
    return Target(name or raw["name"], raw, path)


def pick_target(name: str | None, file: str | Path | None, *, required: bool = True):
    """The target of a command's ``--target NAME`` or ``--target-file PATH`` (not both)."""
    if name and file:
        raise EdgepruneError("give --target NAME or --target-file PATH, not both")
    if file:
        return load_target_file(file)
    if name:
        return load_target(name)
    if required:
        raise EdgepruneError("no target given: pass --target NAME (see `edgeprune targets`) or "
                             "--target-file PATH")
    return None


def validate_target(raw: dict, path: Path | str = "<target>") -> None:
    """Check a target document against the schema of its kind; raise naming the bad field."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(target_schema(raw)).iter_errors(raw),
                    key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise EdgepruneError(f"target file {path}: {where}: {e.message}; fix the file "
                             "(see targets/jetson-nano.toml for the schema)")


# The schema every targets/*.toml follows. Two kinds: a Jetson (runtime tensorrt: gpu, software,
# dla sections) and the host (runtime onnxruntime-cpu: a cpu section). Numbers are facts with
# their sources in the file's comments; the schema checks their presence, types and ranges.
_NUM = {"type": "number", "minimum": 0}
_POS = {"type": "number", "exclusiveMinimum": 0}
_VERSION = {"type": "string", "pattern": r"^\d+(\.\d+)*$"}
_PRECISION_LIST = {"type": "array", "items": {"enum": list(PRECISIONS)}, "uniqueItems": True}


def _section(required: dict, optional: dict | None = None) -> dict:
    return {"type": "object", "required": list(required),
            "properties": {**required, **(optional or {})}}


_COMMON = {
    "name": {"type": "string", "pattern": "^[a-z0-9-]+$"},
    "display_name": {"type": "string"},
    "runtime": {"enum": ["tensorrt", "onnxruntime-cpu"]},
    "peak": _section({"fp32_tflops": _POS, "fp16_tflops": _NUM, "int8_tops": _NUM}),
    "memory": _section({"size_gb": _NUM, "bandwidth_gbps": _POS, "on_chip_kib": _POS},
                       {"on_chip_bandwidth_gbps": _POS}),
    "precisions": _section({"fast": {**_PRECISION_LIST, "minItems": 1,
                                     "contains": {"const": "fp32"}}}),
    "estimate": _section({"efficiency": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                          "launch_overhead_us": _NUM}),
}
_JETSON = {
    "properties": {
        **_COMMON,
        "runtime": {"const": "tensorrt"},
        "gpu": _section({
            "architecture": {"enum": ["Maxwell", "Pascal", "Volta", "Ampere", "Blackwell"]},
            "compute_capability": {"type": "string", "pattern": r"^\d\.\d$"},
            "cuda_cores": {"type": "integer", "minimum": 1},
            "tensor_cores": {"type": "integer", "minimum": 0},
            "max_clock_mhz": _POS,
        }, {"super_clock_mhz": _POS}),
        "dla": _section({"cores": {"type": "integer", "minimum": 0},
                         "precisions": _PRECISION_LIST}),
        "power": _section({"modes_w": {"type": "array", "items": _POS, "minItems": 1}},
                          {"modes": {"type": "array", "items": {"type": "string"}}}),
        "software": _section({
            "jetpack": _VERSION, "l4t": {"type": "string", "pattern": r"^R\d+\.\d+(\.\d+)?$"},
            "tensorrt": _VERSION, "cuda": _VERSION, "cudnn": _VERSION,
            "container": {"type": "string", "pattern": r"^nvcr\.io/nvidia/l4t-[a-z-]+:r[0-9.]+"},
        }, {"trtexec": {"type": "string", "pattern": "^/"}, "python": _VERSION}),
        "engine": _section({}, {"workspace_mib": {"type": "integer", "minimum": 16}}),
    },
    "required": ["gpu", "dla", "power", "software"],
}
_HOST = {
    "properties": {
        **_COMMON,
        "runtime": {"const": "onnxruntime-cpu"},
        "cpu": _section({"cores": {"type": "integer", "minimum": 1}, "clock_ghz": _POS}),
    },
    "required": ["cpu"],
}
_REQUIRED = ["name", "display_name", "runtime", "peak", "memory", "precisions", "estimate"]


def target_schema(raw: dict) -> dict:
    """The JSON schema for ``raw``'s kind, picked by its runtime (so errors name the field)."""
    kind = _HOST if raw.get("runtime") == "onnxruntime-cpu" else _JETSON
    return {"type": "object", "required": _REQUIRED + kind["required"],
            "properties": kind["properties"]}

