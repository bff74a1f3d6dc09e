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
    return Target(name, raw, path)


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
