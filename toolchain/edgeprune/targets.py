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

PRECISIONS = ("fp32", "fp16", "int8", "binary")


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


def parse_version(text: str) -> tuple[int, ...]:
    """"8.5.2" -> (8, 5, 2): TensorRT, CUDA and JetPack versions compare as tuples."""
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        raise EdgepruneError(f"{text!r} is not a version like 8.5.2; fix the target file") from None


def tensorrt_version(target: Target) -> tuple[int, ...]:
    """The TensorRT version of the target's last JetPack, e.g. (8, 2, 1); raises for CPU targets."""
    version = target.section("software").get("tensorrt")
    if target.runtime != "tensorrt" or not version:
        raise EdgepruneError(f"{target.name} runs {target.runtime}, not TensorRT; pick a Jetson "
                             "target (run `edgeprune targets`)")
    return parse_version(version)


def list_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.toml"))


@cache
def load_target(name: str) -> Target:
    path = targets_dir() / f"{name}.toml"
    if not path.is_file():
        raise EdgepruneError(f"unknown target {name!r}; choose one of: {', '.join(list_targets())}"
                             " (run `edgeprune targets` to see them)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise EdgepruneError(f"target file {path} is not valid TOML ({e})") from None
    validate_target(raw, path)
    return Target(name, raw, path)


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


# Fastest first: what ``--precision auto`` picks among a target's fast precisions.
_SPEED_ORDER = ("int8", "fp16", "fp32")


def resolve_precision(target: Target, precision: str, *, allow_emulated: bool = False) -> str:
    """Check ``precision`` against what the target runs fast; ``auto`` picks the fastest.

    binary is a storage format (1-bit weights and scales): TensorRT runs the binarized model with
    its float kernels, so every target accepts it.
    """
    if precision == "auto":
        return next(p for p in _SPEED_ORDER if p in target.fast_precisions)
    if precision not in PRECISIONS:
        raise EdgepruneError(f"unknown precision {precision!r}; choose one of: auto, "
                             f"{', '.join(PRECISIONS)}")
    if precision == "binary" or precision in target.fast_precisions or allow_emulated:
        return precision
    raise EdgepruneError(
        f"{target.name} does not run {precision} fast: its precisions are "
        f"{', '.join(target.fast_precisions)}; pick one of those, or pass --allow-emulated")
