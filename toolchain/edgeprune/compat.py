"""Static TensorRT compatibility check of an ONNX graph for a target, before any device sees it.

An engine is built on the device, minutes into a deployment; this check catches on the host what
would make that build fail: an operator the target's TensorRT ONNX parser does not import (the
lists are data: targets/tensorrt/ops-<version>.toml), an opset newer than the parser reads, int8
in a form TensorRT cannot run explicitly (QOperator nodes, uint8 or non-zero zero points,
per-channel activations), and dynamic shapes without optimization profiles.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError
from edgeprune.targets import Target
from edgeprune.tensorrt_caps import OpList, TensorRT, for_target

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# ONNX Runtime's QOperator and dynamic-quantization forms: TensorRT only reads QDQ.
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                 "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool")
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class CompatReport:
    """What :func:`check_onnx` checked; a report only exists for a graph that passed."""

    path: str
    target: str
    tensorrt: str
    ops_file: str
    precision: str
    opset: int
    max_opset: int
    nodes: int
    ops: dict[str, int]            # op type -> count, every one found in the parser's list
    int8_mode: str | None = None   # explicit-qdq | implicit-calibration (int8 only)
    qdq_nodes: int = 0
    dynamic_inputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CompatReport:
        return cls(**d)


def check_onnx(onnx_path: str | Path, target: Target, precision: str, *,
               shapes: dict | None = None,
               profile_hint: str = "give --batch MIN,OPT,MAX") -> CompatReport:
    """Check that ``target``'s TensorRT can build ``onnx_path`` at ``precision``.

    ``shapes`` maps each dynamic input to its (min, opt, max) shapes (the engine's optimization
    profile); without it a dynamic dimension is an error, whose message ends with
    ``profile_hint`` (how the calling command gives a profile). Raises EdgepruneError naming the
    first offending node and op; returns the report of what was checked.
    """
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise EdgepruneError(f"ONNX file {path} does not exist; export it with `edgeprune export`")
    model = onnx.load(str(path))
    caps = for_target(target)
    oplist = caps.ops
    trt = f"TensorRT {target.section('software')['tensorrt']} ({target.name})"
    opset = _check_opset(model, oplist, trt)
    nodes = list(_all_nodes(model.graph))
    counts = Counter(n.op_type for n in nodes)
    _check_ops(nodes, oplist, trt)
    report = CompatReport(str(path), target.name, target.section("software")["tensorrt"],
                          oplist.path.name, precision, opset, oplist.max_opset, len(nodes),
                          dict(sorted(counts.items())))
    report.qdq_nodes = sum(counts[op] for op in QDQ_OPS)
    if report.qdq_nodes:
        _check_qdq(model, nodes, trt)
    report.int8_mode, note = _int8_mode(precision, report.qdq_nodes, caps)
    report.notes += [note] if note else []
    report.dynamic_inputs = _check_shapes(model, shapes, trt, profile_hint)
    return report


def _check_opset(model, oplist: OpList, trt: str) -> int:
    opsets = {o.domain: o.version for o in model.opset_import}
    opset = max(opsets.get(d, 0) for d in DEFAULT_DOMAINS)
    if opset > oplist.max_opset:
        raise EdgepruneError(f"the graph uses opset {opset}, but {trt} reads opsets up to "
                             f"{oplist.max_opset}; export at opset {oplist.max_opset} or lower")
    return opset


def _all_nodes(graph):
    """Every node, including those in If/Loop/Scan bodies (TensorRT parses those too)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


def _check_ops(nodes, oplist: OpList, trt: str) -> None:
    for node in nodes:
        where = f"node {node.name or '(unnamed)'!r} ({node.op_type})"
        if node.domain not in DEFAULT_DOMAINS:
            raise EdgepruneError(f"{where} is in the custom domain {node.domain!r}, which "
                                 f"{trt} can only run with a plugin; remove it before export")
        if node.op_type in QOPERATOR_OPS:
            raise EdgepruneError(f"{where} is a QOperator/integer op that TensorRT cannot run; "
                                 "quantize to QDQ format (QuantizeLinear/DequantizeLinear) instead")
        if node.op_type not in oplist.ops:
            raise EdgepruneError(f"{where} is not supported by the ONNX parser of {trt} "
                                 f"(see targets/tensorrt/{oplist.path.name}); replace the layer "
                                 "or pick a target with a newer TensorRT")


def _constants(model) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name: where Q/DQ scales and zero points live."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _check_qdq(model, nodes, trt: str) -> None:
    """TensorRT's explicit-quantization rules (see jetson.md): int8, zero point 0, positive scales,
    per-channel only on weights along axis 0, per-tensor activations."""
    consts = _constants(model)
    weights = set(consts)  # constant tensors, and what Q of a constant makes (float-QDQ weights)
    for node in nodes:
        if node.op_type not in QDQ_OPS:
            continue
        if node.op_type == "QuantizeLinear" and node.input[0] in weights:
            weights.add(node.output[0])
        where = f"node {node.name or '(unnamed)'!r} ({node.op_type})"
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        zero = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            raise EdgepruneError(f"{where} has a computed scale; TensorRT needs constant scales")
        if not np.all(scale > 0):
            raise EdgepruneError(f"{where} has a scale <= 0; TensorRT needs positive scales")
        if zero is None:
            raise EdgepruneError(f"{where} has no zero point, so it is uint8 by ONNX's default; "
                                 "TensorRT needs int8 with zero point 0 (quantize symmetrically)")
        if zero.dtype != np.int8:
            raise EdgepruneError(f"{where} is {zero.dtype} (zero point type); TensorRT runs only "
                                 "signed int8 Q/DQ: quantize with QInt8 activations and weights")
        if np.any(zero != 0):
            raise EdgepruneError(f"{where} has a non-zero zero point; TensorRT needs symmetric "
                                 "quantization (ActivationSymmetric=True, WeightSymmetric=True)")
        if scale.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if node.input[0] not in weights:
                raise EdgepruneError(f"{where} quantizes an activation per channel; TensorRT "
                                     "needs per-tensor activation scales")
            if axis != 0:
                raise EdgepruneError(f"{where} quantizes weights per channel along axis {axis}; "
                                     "TensorRT needs the output-channel axis 0")


def _int8_mode(precision: str, qdq_nodes: int, caps: TensorRT) -> tuple:
    """How TensorRT will get int8 scales: from the graph's Q/DQ or from a calibration cache."""
    if precision != "int8":
        note = (f"the graph has {qdq_nodes} Q/DQ nodes: TensorRT runs those parts in int8 even "
                f"at {precision}") if qdq_nodes else None
        return None, note
    if qdq_nodes:
        return "explicit-qdq", None
    if caps.implicit_int8 == "removed":
        raise EdgepruneError("the graph has no Q/DQ nodes and TensorRT 11 has no implicit int8 "
                             "calibration; quantize the model to QDQ first")
    note = ("no Q/DQ nodes: int8 needs the implicit calibration cache "
            + ("(deprecated since TensorRT 10.1)" if caps.implicit_int8 == "deprecated" else ""))
    return "implicit-calibration", note


def _check_shapes(model, shapes: dict | None, trt: str, hint: str) -> list[str]:
    """Names of the inputs with dynamic dimensions; raise if one has no profile in ``shapes``."""
    initializers = {t.name for t in model.graph.initializer}
    dynamic = []
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            dynamic.append(inp.name)
            if not shapes or inp.name not in shapes:
                shown = "x".join(d.dim_param or "?" if not d.HasField("dim_value")
                                 else str(d.dim_value) for d in dims)
                raise EdgepruneError(
                    f"input {inp.name!r} has dynamic shape {shown}: {trt} needs an optimization "
                    f"profile; export with a fixed batch (no --dynamic-batch) or {hint}")
    return dynamic
