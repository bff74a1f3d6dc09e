"""What each TensorRT version can do: the one module that knows TensorRT's version rules.

The version is parsed once, from the target file, into a :class:`TensorRT`; the compatibility
check, the engine plan, trtexec's command line, the Python builder and the calibration cache all
ask it instead of comparing version tuples of their own. The ONNX parser's operator lists and
opset limits are data (``targets/tensorrt/ops-<version>.toml``); the flag and API changes are
the release notes' (jetson.md, the TensorRT 8.x-to-10.x migration guide):

- the workspace: ``--workspace=MiB`` on 8.2; ``--memPoolSize=workspace:MiB`` from 8.4 (and
  ``--workspace`` removed in 10); the API's ``set_memory_pool_limit`` from 8.4;
- QDQ graphs are built strongly typed (``--stronglyTyped``, no precision flags) from 10;
- explicit batch is a network flag before 10 and the only mode from 10 on;
- implicit int8 calibration (a calibration cache, no Q/DQ) is deprecated from 10.1 and gone in 11;
- per-layer profiling: trtexec's ``--profilingVerbosity=detailed`` (8.2 on; 8.0 spelt it
  ``--nvtxMode=verbose``) stores the layer details in the engine, and ``--exportLayerInfo``
  (the engine inspector, 8.2 on) writes them; 8.6 added each layer's ONNX node names
  ("Metadata"); ``--exportProfile`` has ``medianMs`` from 8.4; ``--exportTimes`` lists the
  warm-up runs too before 8.5 (trtexec's samples/common/sampleReporting.cpp per release);
- NV_TENSORRT_VERSION, the code in a calibration cache's header and trtexec's banner, is
  major*1000 + minor*100 + patch before 10 (8.2.1 -> 8201, NvInferRuntimeCommon.h) and
  major*10000 + minor*100 + patch from 10 on (10.3.0 -> 100300, NvInferRuntimeBase.h).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edgeprune.errors import EdgepruneError
from edgeprune.paths import targets_dir

DEFAULT_VERSION = "8.2.1"  # JetPack 4.6, the oldest TensorRT a supported Jetson runs


def parse_version(text: str) -> tuple[int, ...]:
    """"8.5.2" -> (8, 5, 2): TensorRT, CUDA and JetPack versions compare as tuples."""
    try:
        parts = tuple(int(part) for part in str(text).split("."))
    except ValueError:
        raise EdgepruneError(f"{text!r} is not a version like 8.5.2; fix the target file") from None
    if not parts or any(p < 0 for p in parts):
        raise EdgepruneError(f"{text!r} is not a version like 8.5.2; fix the target file")
    return parts


@dataclass(frozen=True)
class OpList:
    tensorrt: str
    max_opset: int
    ops: frozenset[str]
    path: Path


@dataclass(frozen=True)
class TensorRT:
    """One TensorRT release and what it can do."""

    version: tuple[int, ...]

    @classmethod
    def parse(cls, text: str | None) -> TensorRT:
        return cls(parse_version(text or DEFAULT_VERSION))

    @property
    def text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def code(self) -> int:
        """NV_TENSORRT_VERSION (the calibration cache header's and trtexec banner's number)."""
        major, minor, patch = (*self.version, 0, 0)[:3]
        return major * (10000 if major >= 10 else 1000) + minor * 100 + patch

    @classmethod
    def from_code(cls, code: int) -> TensorRT:
        """The inverse of :attr:`code` (8201 -> 8.2.1, 100300 -> 10.3.0)."""
        scale = 10000 if code >= 100000 else 1000
        major, rest = divmod(code, scale)
        return cls((major, rest // 100, rest % 100))

    # ------------------------------------------------ the ONNX parser

    @property
    def ops(self) -> OpList:
        return load_op_list(self.version[:2])

    @property
    def max_opset(self) -> int:
        return self.ops.max_opset

    # ------------------------------------------------ building

    @property
    def has_memory_pools(self) -> bool:
        return self.version >= (8, 4)

    def workspace_flag(self, mib: int) -> str:
        return f"--memPoolSize=workspace:{mib}" if self.has_memory_pools else f"--workspace={mib}"

    @property
    def strongly_typed_qdq(self) -> bool:
        """QDQ graphs build strongly typed: the Q/DQ nodes decide the precisions."""
        return self.version >= (10,)

    @property
    def needs_explicit_batch_flag(self) -> bool:
        return self.version < (10,)

    @property
    def implicit_int8(self) -> str:
        """Implicit int8 calibration from a cache: "supported", "deprecated" or "removed"."""
        if self.version >= (11,):
            return "removed"
        return "deprecated" if self.version >= (10, 1) else "supported"

    # ------------------------------------------------ profiling

    def profiling_flag(self) -> str:
        """The trtexec flag that keeps every layer's details in the engine (and its profile)."""
        return "--profilingVerbosity=detailed" if self.version >= (8, 2) else "--nvtxMode=verbose"

    @property
    def exports_layer_info(self) -> bool:
        return self.version >= (8, 2)

    @property
    def layer_metadata(self) -> bool:
        """Layer information lists the ONNX nodes each layer came from ("Metadata")."""
        return self.version >= (8, 6)

    @property
    def times_include_warmup(self) -> bool:
        """``--exportTimes`` holds the warm-up runs too (drop those starting before warm-up)."""
        return self.version < (8, 5)

    def same_release(self, other: TensorRT) -> bool:
        """Engines are bound to major.minor: same release for an engine's purposes."""
        return self.version[:2] == other.version[:2]


def for_target(target) -> TensorRT:
    """The TensorRT of a Jetson target's last JetPack; a CPU target is a user error."""
    version = target.section("software").get("tensorrt")
    if target.runtime != "tensorrt" or not version:
        raise EdgepruneError(f"{target.name} runs {target.runtime}, not TensorRT; pick a Jetson "
                             "target (run `edgeprune targets`)")
    return TensorRT.parse(version)


def list_op_files() -> list[Path]:
    return sorted((targets_dir() / "tensorrt").glob("ops-*.toml"),
                  key=lambda p: parse_version(p.stem.removeprefix("ops-")))


@cache
def load_op_list(version: tuple[int, ...]) -> OpList:
    """The op list of the newest listed TensorRT release not newer than ``version``.

    A target on 8.6 gets the 8.5 list: never claim support a release may not have.
    """
    files = [p for p in list_op_files()
             if parse_version(p.stem.removeprefix("ops-")) <= version[:2]]
    if not files:
        raise EdgepruneError(f"no ONNX operator list for TensorRT {'.'.join(map(str, version))} in "
                             f"{targets_dir() / 'tensorrt'}; add an ops-<version>.toml there")
    path = files[-1]
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return OpList(raw["tensorrt"], int(raw["max_opset"]), frozenset(raw["ops"]), path)


def version_from_log(log: str) -> str | None:
    """TensorRT version from trtexec's log: "TensorRT version: 8.2.1" where it prints one, else
    the banner's "[TensorRT v8201]" / "[TensorRT v100300]" (NV_TENSORRT_VERSION)."""
    m = re.search(r"TensorRT version: (\d+\.\d+\.\d+)", log)
    if m:
        return m.group(1)
    m = re.search(r"\[TensorRT v(\d{4,6})\]", log)
    return TensorRT.from_code(int(m.group(1))).text if m else None
