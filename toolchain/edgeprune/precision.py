"""Precisions: the one registry of what a precision is, and the one place a build decides it.

A :class:`Precision` knows its bits per weight, whether making it needs data (calibration or
fine-tuning), what a TensorRT engine builds it as, and its speed rank (the tie-break when two
precisions estimate the same). ``resolve_precision`` turns what the user asked for (a name or
``auto``) into a :class:`Resolution` against one target, once per build; every later stage takes
that decision instead of re-deriving it.

``auto`` asks the target's own latency estimate (the roofline of :mod:`edgeprune.profile.latency`)
for each precision the target runs fast, on the graph each would really be built from (the fp32
graph for fp32 and fp16, a TensorRT-style QDQ graph for int8: its Q/DQ nodes cost launches), and
picks the fastest; the resolution records every estimate and says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class Precision:
    name: str
    bits: int              # bits per stored weight
    needs_data: bool       # calibration (int8) or fine-tuning (binary) data
    engine: str | None     # what TensorRT builds it as; None: the fastest float the target runs
    speed_rank: int        # 0 = fastest where the hardware has a fast path (the tie-break)
    description: str

    def engine_precision(self, target) -> str:
        """The precision a TensorRT engine for ``target`` is built at (binary: float kernels)."""
        if self.engine is not None:
            return self.engine
        return "fp16" if "fp16" in target.fast_precisions else "fp32"


_ALL = (
    Precision("fp32", 32, False, "fp32", 3, "32-bit float"),
    Precision("fp16", 16, False, "fp16", 2, "16-bit float (TensorRT: --fp16 on the fp32 graph)"),
    Precision("int8", 8, True, "int8", 1, "calibrated int8 (QDQ)"),
    Precision("binary", 1, True, None, 4, "1-bit weights with a float scale per channel "
              "(a storage format: TensorRT runs it with float kernels)"),
    # Deep Compression: 2^b shared values per layer, Huffman-coded indices. A storage and
    # download format only: TensorRT runs the decoded float weights (bits: what the device
    # reads per weight at run time).
    Precision("shared", 32, True, None, 5, "k-means shared weights + Huffman coding "
              "(a storage format: TensorRT runs the decoded float weights)"),
)
PRECISIONS: dict[str, Precision] = {p.name: p for p in _ALL}
ENGINE_PRECISIONS = tuple(p.name for p in _ALL if p.engine == p.name)  # fp32, fp16, int8
AUTO = "auto"


def names() -> list[str]:
    return list(PRECISIONS)


def get_precision(name: str) -> Precision:
    """The precision called ``name``; an unknown name is a user error naming the choices."""
    if isinstance(name, Precision):
        return name
    if name not in PRECISIONS:
        raise EdgepruneError(f"unknown precision {name!r}; choose one of: {AUTO}, "
                             f"{', '.join(PRECISIONS)}")
    return PRECISIONS[name]


@dataclass
class Resolution:
    """What a build runs at, decided once against its target, and why."""

    precision: str
    requested: str
    target: str
    emulated: bool = False  # the target has no fast path for it (--allow-emulated)
    reason: str = ""
    estimates_ms: dict[str, float] = field(default_factory=dict)  # auto: the roofline per candidate

    @property
    def spec(self) -> Precision:
        return PRECISIONS[self.precision]

    def to_dict(self) -> dict:
        return {"precision": self.precision, "requested": self.requested, "target": self.target,
                "emulated": self.emulated, "reason": self.reason,
                "estimates_ms": self.estimates_ms}

    @classmethod
    def from_dict(cls, d: dict) -> Resolution:
        return cls(**d)


def check_precision(target, name: str, *, allow_emulated: bool = False,
                    flag: str = "--allow-emulated") -> Resolution:
    """An explicit precision checked against ``target``. ``flag`` is the option that allows an
    emulated precision in the calling command (None: the command has none, so say so)."""
    p = get_precision(name)
    runs_fast = p.name in target.fast_precisions
    if p.engine is None or runs_fast:  # binary: a storage format every target runs
        return Resolution(p.name, name, target.name, reason="asked for")
    if allow_emulated:
        return Resolution(p.name, name, target.name, emulated=True,
                          reason=f"asked for; {target.name} has no fast {p.name} (emulated)")
    how = f", or pass {flag}" if flag else ""
    raise EdgepruneError(f"{target.name} does not run {p.name} fast: its precisions are "
                         f"{', '.join(target.fast_precisions)}; pick one of those{how}")


def resolve_precision(target, requested: str, *, allow_emulated: bool = False,
                      has_data: bool = True, estimate: Callable[[list[str]], dict] | None = None,
                      flag: str = "--allow-emulated") -> Resolution:
    """Decide the precision once. ``auto`` takes the target's fast precisions (those that need no
    data when ``has_data`` is false) and, with ``estimate`` (candidate names -> estimated ms),
    the fastest by that estimate; without one, the fastest by speed rank."""
    if requested != AUTO:
        res = check_precision(target, requested, allow_emulated=allow_emulated, flag=flag)
        if res.spec.needs_data and not has_data:
            raise EdgepruneError(f"--precision {res.precision} needs data (calibration or "
                                 "fine-tuning): pass --data SPEC")
        return res
    candidates = [p for p in names() if p in target.fast_precisions
                  and (has_data or not PRECISIONS[p].needs_data)]
    if estimate is None or len(candidates) == 1:
        best = min(candidates, key=lambda p: PRECISIONS[p].speed_rank)
        return Resolution(best, AUTO, target.name,
                          reason=f"the fastest of {target.name}'s precisions "
                                 f"({', '.join(candidates)}) by kind")
    ms = estimate(candidates)
    best = min(candidates, key=lambda p: (ms[p], PRECISIONS[p].speed_rank))
    shown = ", ".join(f"{p} {ms[p]:.3f} ms" for p in sorted(candidates, key=ms.get))
    skipped = "" if has_data else " (int8 and binary need --data)"
    return Resolution(best, AUTO, target.name, estimates_ms={p: ms[p] for p in candidates},
                      reason=f"fastest by {target.name}'s latency estimate: {shown}{skipped}")


def estimate_precisions(fp32_onnx, target, candidates: list[str], workdir) -> dict[str, float]:
    """The target's roofline estimate (ms, batch 1) of the graph each candidate is built from.

    int8 is estimated on the QDQ graph the target's int8 flavour makes (calibrated on random
    inputs: only the graph's structure matters to the estimate), since its Q/DQ nodes cost time.
    """
    import onnx

    from edgeprune.profile.accounting import account
    from edgeprune.profile.latency import estimate_latency_ms

    fp32 = onnx.load(str(fp32_onnx))
    out = {}
    for name in candidates:
        graph = _qdq_graph(fp32_onnx, target, workdir) if name == "int8" else fp32
        out[name] = round(estimate_latency_ms(account(graph, name).nodes, target)[0], 6)
    return out


def _qdq_graph(fp32_onnx, target, workdir):
    import numpy as np
    import onnx

    from edgeprune.quantize.calibration import CalibrationRecipe
    from edgeprune.quantize.int8 import flavour_for, quantize_int8

    class RandomSource:  # the calibration source interface, with random inputs
        num_batches = 4

        def __len__(self):
            return self.num_batches

        def __iter__(self):
            rng = np.random.default_rng(0)
            dims = onnx.load(str(fp32_onnx), load_external_data=False).graph.input[0]
            shape = [d.dim_value or 1 for d in dims.type.tensor_type.shape.dim]
            return (rng.standard_normal(shape).astype("float32") for _ in range(4))

    path = workdir / "auto-int8.onnx"
    try:
        quantize_int8(fp32_onnx, path, RandomSource(), CalibrationRecipe("auto", method="minmax"),
                      flavour_for(target), workdir=workdir)
        return onnx.load(str(path))
    finally:
        path.unlink(missing_ok=True)
