"""Per-node accounting of an ONNX graph: what each node computes, stores and moves.

After ONNX shape inference, every node gets: its op type and output shape, MACs (Conv, Gemm and
MatMul counted exactly; other compute ops as element counts), the parameters it owns and their
bytes at the node's precision, and the activation bytes it reads and writes. The profile,
memory, energy and latency estimates are all computed from these rows, so they agree with each
other by construction.

Precision of a node, most specific first:
- binary: its weight initializer is listed in the model's ``edgeprune.binary_weights`` metadata
  (JSON list of initializer names, written by the quantization stage); 1 bit per weight plus one
  fp32 scale per output channel. ``edgeprune.binary_activations`` (JSON ``true`` or a list of
  node / initializer names) marks nodes whose inputs are binarized too (XNOR + popcount MACs).
- int8: a Conv/Gemm/MatMul whose weight comes through DequantizeLinear from an int8 initializer
  (QDQ format); those initializers (and their scales and zero points) belong to that node.
- otherwise the variant's precision (fp32, fp16, int8 built from a float graph by TensorRT's
  implicit calibration), with float nodes of a binary variant counted as fp32.

Free ops (reshapes, weight Q/DQ) and activations fused into the Conv/Gemm before them read and
write nothing: their producer's kernel does the traffic.

Activation bytes: an element costs the size of its ONNX type, capped by the node's precision
(an fp32 graph built as fp16 moves 2-byte activations; an int8 node 1-byte ones; binarized
inputs 1 bit). A dynamic batch dimension is counted as 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from math import prod

import numpy as np

from edgeprune.precision import PRECISIONS

PRECISION_BITS = {p.name: p.bits for p in PRECISIONS.values()}
MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# Ops that only relabel or slice shapes, or (de)quantize weights folded into their consumer:
# no compute of their own.
FREE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Constant",
            "Gather", "Cast", "QuantizeLinear", "DequantizeLinear", "Dropout"}
# Elementwise activations that inference runtimes fuse into the Conv/Gemm producing their input.
FUSABLE = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "BatchNormalization"}

# Ops whose kernels run a fusable activation after them as an epilogue.
EPILOGUE_HOSTS = MAC_OPS | {"Add"}

# Non-MAC ops with int8 kernels in ONNX Runtime (QLinearAdd, QLinearConcat, QLinear*Pool, ...)
# and TensorRT. BatchNormalization is not among them: ORT runs it in float between conversions.
INT8_KERNEL_OPS = {"Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu",
                   "Clip", "Sigmoid", "LeakyRelu", "Resize", "Pad", "Slice", "Transpose"}

BINARY_WEIGHTS_KEY = "edgeprune.binary_weights"
BINARY_ACTIVATIONS_KEY = "edgeprune.binary_activations"

_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
                16: 2}  # onnx.TensorProto element types -> bytes


@dataclass
class NodeCost:
    """One node's costs. ``reads``/``writes`` list the bytes of each activation tensor."""

    name: str
    op_type: str
    output_shape: list[int]
    precision: str
    macs: int = 0
    elements: int = 0  # element operations of non-MAC compute ops
    params: int = 0
    weight_bytes: int = 0
    reads: list[int] = field(default_factory=list)
    writes: list[int] = field(default_factory=list)
    binary_activations: bool = False
    fused: bool = False  # runs inside its producer's kernel (no launch of its own)

    @property
    def act_read_bytes(self) -> int:
        return sum(self.reads)

    @property
    def act_write_bytes(self) -> int:
        return sum(self.writes)

    def row(self) -> dict:
        """The JSON row of report.json's ``layers``."""
        return {"name": self.name, "op_type": self.op_type, "output_shape": self.output_shape,
                "precision": self.precision, "macs": self.macs, "elements": self.elements,
                "params": self.params, "weight_bytes": self.weight_bytes,
                "act_read_bytes": self.act_read_bytes, "act_write_bytes": self.act_write_bytes}


@dataclass
class GraphAccount:
    """The rows of a graph plus what the memory walk needs: execution order and tensor sizes."""

    nodes: list[NodeCost]
    tensor_bytes: dict[str, int]  # activation tensors (graph inputs and node outputs)
    node_inputs: list[list[str]]  # activation tensors each node reads, in order
    node_outputs: list[list[str]]
    graph_inputs: list[str]
    graph_outputs: list[str]

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def weight_bytes(self) -> int:
        return sum(n.weight_bytes for n in self.nodes)


def detect_precision(model) -> str:
    """The precision an ONNX model was quantized to: binary, int8 (QDQ), fp16 or fp32."""
    meta = {p.key: p.value for p in model.metadata_props}
    if json.loads(meta.get(BINARY_WEIGHTS_KEY, "[]") or "[]"):
        return "binary"
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits \
                and inits[node.input[0]].data_type in (2, 3):  # uint8, int8
            return "int8"
    floats = [i.data_type for i in inits.values() if i.data_type in (1, 10)]
    return "fp16" if floats and floats.count(10) >= floats.count(1) else "fp32"


def account(model, precision: str = "fp32") -> GraphAccount:
    """Account every node of ``model`` (an onnx.ModelProto) at the variant ``precision``."""
    import onnx

    if precision not in PRECISION_BITS:
        raise ValueError(f"unknown precision {precision!r}")
    if precision == "shared":  # the runtime holds and reads the decoded float weights
        precision = "fp32"
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    shapes, dtypes = _value_shapes(g)
    meta = {p.key: p.value for p in model.metadata_props}
    binary_w = set(json.loads(meta.get(BINARY_WEIGHTS_KEY, "[]") or "[]"))
    binary_a = _binary_activations(meta.get(BINARY_ACTIVATIONS_KEY))
    producers = {o: n for n in g.node for o in n.output}
    weights_of = _weight_sources(g, inits, producers)
    float_precision = "fp32" if precision == "binary" else precision

    constant = _constant_tensors(g, inits) | weights_of["derived"]

    def is_activation(t: str) -> bool:
        # Weights and what is computed from weights alone (a weight's Q/DQ chain, Constant
        # nodes and chains on them) are folded at build time: never activation memory.
        return bool(t) and t not in inits and t not in constant

    consumers: dict[str, list] = {}
    for n in g.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    precs = {}
    for node in g.node:
        owned = weights_of["by_node"].get(id(node), [])
        w_names = {w.name for w, role in owned if role == "weight"}
        precs[id(node)] = float_precision
        if node.op_type in MAC_OPS:
            if w_names & binary_w:
                precs[id(node)] = "binary"
            elif any(w.data_type in (2, 3) or w.name in weights_of["quantized"]
                     for w, role in owned if role == "weight"):
                precs[id(node)] = "int8"
    conversions = _qdq_precisions(g, precs, is_activation, producers, consumers)

    rows, node_inputs, node_outputs = [], [], []
    tensor_bytes: dict[str, int] = {}
    for i, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{i}"
        owned = weights_of["by_node"].get(id(node), [])
        w_names = {w.name for w, role in owned if role == "weight"}
        node_prec = precs[id(node)]
        bin_act = node_prec == "binary" and (binary_a is True or (
            isinstance(binary_a, set) and (name in binary_a or w_names & binary_a)))
        act_in = [t for t in node.input if is_activation(t)]
        outs = [t for t in node.output if t]
        act_out = [t for t in outs if is_activation(t)]
        elem_bytes = PRECISION_BITS["fp32" if node_prec == "binary" else node_prec] / 8
        for t in act_out:
            tensor_bytes[t] = _tensor_bytes(shapes.get(t), dtypes.get(t), elem_bytes)
        for t in act_in:
            if t not in tensor_bytes:  # graph inputs
                tensor_bytes[t] = _tensor_bytes(shapes.get(t), dtypes.get(t), elem_bytes)
        reads = [tensor_bytes[t] for t in act_in]
        if bin_act:  # binarized inputs travel as 1 bit per element
            reads = [int(np.ceil(_numel(shapes.get(t)) / 8)) for t in act_in]
        cost = NodeCost(name, node.op_type, _shape(shapes.get(outs[0]) if outs else None),
                        node_prec, reads=reads, writes=[tensor_bytes[t] for t in act_out],
                        binary_activations=bin_act)
        cost.params, cost.weight_bytes = _weights(owned, node_prec, node.op_type in MAC_OPS)
        if node.op_type in MAC_OPS:
            cost.macs = _macs(node, shapes, inits)
        elif node.op_type not in FREE_OPS or id(node) in conversions:
            cost.elements = max([_numel(shapes.get(t)) for t in act_in + act_out] or [0])
        producer = producers.get(act_in[0]) if act_in else None
        cost.fused = (node.op_type in FUSABLE and producer is not None
                      and producer.op_type in MAC_OPS)
        if node.op_type in FREE_OPS and id(node) not in conversions:
            cost.fused = True
        if cost.fused:  # an alias or a fused epilogue: its producer's kernel does the traffic
            cost.reads, cost.writes = [], []
        rows.append(cost)
        node_inputs.append(act_in)
        node_outputs.append(act_out)
    inputs = [v.name for v in g.input if v.name not in inits]
    for t in inputs:
        tensor_bytes.setdefault(t, _tensor_bytes(shapes.get(t), dtypes.get(t),
                                                 PRECISION_BITS[float_precision] / 8))
    return GraphAccount(rows, tensor_bytes, node_inputs, node_outputs, inputs,
                        [v.name for v in g.output])


def _qdq_precisions(g, precs: dict, is_activation, producers, consumers) -> set:
    """Precisions in a QDQ graph (one with activation QuantizeLinear nodes); returns the ids of
    the Q/DQ nodes that run as conversion kernels.

    A non-MAC op runs in int8 when it is one of INT8_KERNEL_OPS, every activation it reads comes
    from a DequantizeLinear and everything it writes goes to QuantizeLinear, directly or through
    fusable epilogues such as ReLU (the QDQ sandwich runtimes turn into a quantized kernel:
    QLinearAdd, int8 Concat); an epilogue of an int8 op whose result is quantized next is int8
    too (TensorRT fuses Conv+ReLU and writes int8); otherwise an op runs in fp32,
    like a MAC op left with float weights. An activation Q/DQ next to int8 ops only is folded into
    them (free); one next to a float op, or at the graph's edge, converts a tensor in a kernel of
    its own.
    """
    qdq = ("QuantizeLinear", "DequantizeLinear")
    if not any(n.op_type == "QuantizeLinear" and is_activation(n.input[0]) for n in g.node):
        return set()

    def made_by(t: str, op: str) -> bool:
        return t in producers and producers[t].op_type == op

    def ends_in_q(node) -> bool:  # every path from its output reaches a Q through epilogues
        outs = [c for t in node.output for c in consumers.get(t, [])]
        return bool(outs) and all(c.op_type == "QuantizeLinear"
                                  or (c.op_type in FUSABLE and ends_in_q(c)) for c in outs)

    for node in g.node:  # topological order: producers first
        if node.op_type in qdq or node.op_type in FREE_OPS:
            continue
        if node.op_type in MAC_OPS:
            if precs[id(node)] != "int8" and precs[id(node)] != "binary":
                precs[id(node)] = "fp32"
            continue
        ins = [t for t in node.input if is_activation(t)]
        src = producers.get(ins[0]) if len(ins) == 1 else None
        if (node.op_type in FUSABLE and src is not None and src.op_type in EPILOGUE_HOSTS
                and precs.get(id(src)) == "int8"):
            # The epilogue of an int8 Conv/Gemm or residual Add (Conv→ReLU→Q, TensorRT's Q/DQ
            # placement): it runs in that kernel, which writes int8 when the result is quantized
            # next.
            precs[id(node)] = "int8" if ends_in_q(node) else "fp32"
            continue
        sandwiched = (node.op_type in INT8_KERNEL_OPS and ins
                      and all(made_by(t, "DequantizeLinear") for t in ins) and ends_in_q(node))
        precs[id(node)] = "int8" if sandwiched else "fp32"
    conversions = set()
    for node in g.node:
        if node.op_type not in qdq or not is_activation(node.input[0]):
            continue
        if node.op_type == "DequantizeLinear":
            side = consumers.get(node.output[0], [])
        else:
            side = [producers[node.input[0]]] if node.input[0] in producers else []
        int8_side = side and all(precs.get(id(n)) == "int8" or n.op_type in FREE_OPS
                                 for n in side)
        precs[id(node)] = "int8" if int8_side else "fp32"
        if not int8_side:
            conversions.add(id(node))
    return conversions


def _constant_tensors(g, inits) -> set[str]:
    """Outputs of Constant nodes and of nodes that read only initializers and constants."""
    constant: set[str] = set()
    for node in g.node:  # topological order: a chain is found in one pass
        ins = [t for t in node.input if t]
        if node.op_type == "Constant" or (ins and all(t in inits or t in constant for t in ins)):
            constant.update(t for t in node.output if t)
    return constant


def _value_shapes(g) -> tuple[dict[str, list], dict[str, int]]:
    shapes, dtypes = {}, {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        shapes[v.name] = dims  # unknown (dynamic) dimensions count as 1: batch 1
        dtypes[v.name] = t.elem_type
    for i in g.initializer:
        shapes[i.name] = list(i.dims)
        dtypes[i.name] = i.data_type
    return shapes, dtypes


def _weight_sources(g, inits, producers) -> dict:
    """Which initializers each compute node owns, as (initializer, role) with role "weight" or
    "qparam" (a DequantizeLinear scale or zero point), also through DequantizeLinear / Cast /
    Transpose chains (QDQ and fp16 graphs); ``derived`` lists the tensors on such chains."""
    by_node, derived, quantized = {}, set(), set()
    # QuantizeLinear belongs here too: TensorRT-style QDQ graphs keep float weights behind a
    # Q→DQ pair (TensorRT folds it into int8 weights at build time).
    passthrough = {"QuantizeLinear", "DequantizeLinear", "Cast", "Transpose", "Identity",
                   "Reshape"}
    weight_q: set[int] = set()

    def sources(t: str, depth: int = 0) -> list | None:
        if t in inits:
            return [(inits[t], "weight")]
        p = producers.get(t)
        if p is None or p.op_type not in passthrough or depth > 4:
            return None
        first = sources(p.input[0], depth + 1)  # the data input must itself be a weight
        if first is None:
            return None
        derived.add(t)
        if p.op_type == "QuantizeLinear":
            weight_q.add(id(p))
            quantized.update(w.name for w, role in first if role == "weight")
        extra = [(inits[x], "qparam") for x in p.input[1:]
                 if x in inits and p.op_type in ("QuantizeLinear", "DequantizeLinear")]
        return first + extra

    for node in g.node:
        if node.op_type in passthrough and node.op_type != "QuantizeLinear":
            continue
        owned = []
        if node.op_type == "QuantizeLinear":
            if node.input[0] in inits or node.input[0] in derived:
                continue  # a weight's quantizer: its consumer owns the weight
            owned = [(inits[x], "qparam") for x in node.input[1:] if x in inits]  # activation's
        else:
            for t in node.input:
                owned.extend((sources(t) if t else None) or [])
        # Shape arguments (Reshape's shape, Pad's pads: int64) are not parameters.
        owned = [(w, r) for w, r in owned if w.data_type in (1, 10, 2, 3, 6)]
        seen: set[str] = set()
        by_node[id(node)] = [(w, r) for w, r in owned
                             if not (w.name in seen or seen.add(w.name))]
    return {"by_node": by_node, "derived": derived, "quantized": quantized}


def _weights(ws: list, precision: str, is_mac: bool) -> tuple[int, int]:
    """Parameter count and bytes at the node's precision.

    The largest weight of a Conv/Gemm/MatMul is stored at the node's precision (binary: 1 bit
    per weight plus one fp32 scale per output channel); its other weights (the bias) at the
    precision for fp32/fp16 and 32 bits for int8 (int32 bias) and binary (fp32 bias);
    quantization scales and zero points at their stored type and not counted as parameters.
    """
    params = bits = 0
    weights = [w for w, r in ws if r == "weight"]
    main = max(weights, key=lambda w: prod(w.dims)) if is_mac and weights else None
    for w, role in ws:
        n = prod(w.dims)
        if role == "qparam":
            bits += n * _DTYPE_BYTES.get(w.data_type, 4) * 8
            continue
        params += n
        if w is main and precision == "binary":
            bits += n + 32 * (w.dims[0] if w.dims else 1)
        elif w is main or precision in ("fp32", "fp16"):
            bits += n * PRECISION_BITS[precision]
        else:
            bits += n * 32
    return params, (bits + 7) // 8


def _macs(node, shapes, inits) -> int:
    out = _numel(shapes.get(node.output[0]))
    if node.op_type in ("Conv", "ConvTranspose"):
        w = shapes.get(node.input[1]) or []
        if len(w) < 3:
            return 0
        per_out = prod(w[1:])  # in_channels / groups × kernel area
        if node.op_type == "ConvTranspose":  # every input element scatters into C_out/g × k
            return _numel(shapes.get(node.input[0])) * w[1] * prod(w[2:])
        return out * per_out
    a = shapes.get(node.input[0]) or []
    if node.op_type == "Gemm":
        trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
        return out * k
    return out * (a[-1] if a else 0)  # MatMul: every output element is a K-long dot product


def _binary_activations(value: str | None):
    if not value:
        return False
    parsed = json.loads(value)
    if isinstance(parsed, list):
        return set(parsed)
    return bool(parsed)


def _numel(shape) -> int:
    return int(prod(shape)) if shape else 0


def _shape(shape) -> list[int]:
    return [int(d) for d in shape] if shape else []


def _tensor_bytes(shape, dtype, cap: float) -> int:
    size = _DTYPE_BYTES.get(dtype, 4)
    return int(np.ceil(_numel(shape) * min(size, cap)))
