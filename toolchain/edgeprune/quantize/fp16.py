"""fp16: the ONNX model converted to float16, its inputs and outputs kept float32.

For TensorRT the fp16 path is a builder flag (``--fp16``) on the fp32 ONNX: TensorRT picks fp16
kernels itself and keeps fp32 where it must. The float16 ONNX file written here is for runtimes
that take a float16 graph (and to measure fp16 accuracy on the host); ONNX Runtime's CPU kernels
compute it, often by casting back to float32, so its CPU latency says nothing about a GPU's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError

# fp16 has an 11-bit significand (relative step 2^-11 ≈ 4.9e-4); after ~20 layers the logits of
# our nets move by well under 1% of their largest magnitude. Parity is checked on real inputs.
PARITY_TOLERANCE = 1e-2  # max |fp16 − fp32| / max(1, max |fp32|) over the parity inputs


@dataclass
class Fp16Output:
    path: Path
    max_abs_diff: float
    output_scale: float
    tolerance: float
    argmax_agreement: float  # fraction of parity inputs with the same top-1 class


def convert_fp16(fp32_onnx: Path, *, keep_io_types: bool = True):
    """Write the float16 model; return it (an onnx ModelProto)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_onnx)), keep_io_types=keep_io_types)
    _toposort(model.graph)
    onnx.checker.check_model(model)
    return model


def _toposort(graph) -> None:
    """Put the nodes in topological order, in place: the converter appends the input and output
    Casts at the end, which ONNX forbids and strict parsers (TensorRT's, the checker) refuse."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        left = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise EdgepruneError("the fp16 graph has a cycle; please report it")
        for n in done:
            ready.update(n.output)
        ordered += done
        pending = left
    del graph.node[:]
    graph.node.extend(ordered)


def parity(fp32_onnx: Path, fp16_onnx: Path, inputs: np.ndarray, *,
           tolerance: float = PARITY_TOLERANCE) -> Fp16Output:
    """Compare the fp16 model with the fp32 one on ``inputs`` (float32 NCHW, run one by one when
    the model's batch is fixed); raise if they differ by more than ``tolerance``."""
    from edgeprune.export import ort_session

    ref, half = ort_session(fp32_onnx), ort_session(fp16_onnx)
    name = ref.get_inputs()[0].name
    fixed = ref.get_inputs()[0].shape[0] == 1
    chunks = [inputs[i:i + 1] for i in range(len(inputs))] if fixed else [inputs]
    a = np.concatenate([ref.run(None, {name: c})[0] for c in chunks])
    b = np.concatenate([half.run(None, {half.get_inputs()[0].name: c.astype(_io_dtype(half))})[0]
                        for c in chunks]).astype(np.float32)
    diff, scale = float(np.max(np.abs(a - b))), float(np.max(np.abs(a)))
    agree = float(np.mean(a.argmax(1) == b.argmax(1)))
    if not diff <= tolerance * max(1.0, scale):
        raise EdgepruneError(f"the fp16 model differs from fp32 by {diff:.2e} (more than "
                             f"{tolerance:.0e} of the output scale {scale:.2g}); the model has "
                             "values out of fp16's range: use fp32 or int8")
    return Fp16Output(Path(fp16_onnx), diff, scale, tolerance, agree)


def _io_dtype(session) -> type:
    return np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
