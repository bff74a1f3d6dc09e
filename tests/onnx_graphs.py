"""Tiny ONNX graphs built with onnx.helper for the compatibility and engine tests (no torch)."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(path: Path, nodes, inits, *, opset: int = 13, batch="1", in_shape=(3, 8, 8),
         out_shape=(4, 8, 8)) -> Path:
    b = int(batch) if str(batch).isdigit() else batch
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [b, *in_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [b, *out_shape])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def conv_relu(path: Path, **kw) -> Path:
    """input -> Conv(3->4, 3x3) -> Relu -> logits."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["logits"], name="relu1")]
    return save(path, nodes, {"w": w}, **kw)


def qdq_conv(path: Path, *, act_zero=None, act_scale=0.02,
             w_scale=None, w_axis=0, act_per_channel=False, **kw) -> Path:
    """A QDQ conv: Q/DQ on the activation and DQ on int8 weights (per channel by default)."""
    act_zero = np.int8(0) if act_zero is None else act_zero
    act_scale = np.float32(act_scale)
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 127, (4, 3, 3, 3)).astype(np.int8)
    w_scale = np.full(4, 0.01, np.float32) if w_scale is None else w_scale
    a_scale = np.full(3, act_scale, np.float32) if act_per_channel else act_scale
    a_zero = np.full(3, act_zero, type(act_zero)) if act_per_channel else act_zero
    inits = {"a_s": a_scale, "a_z": a_zero, "w_q": w, "w_s": w_scale,
             "w_z": np.zeros(w_scale.shape, np.int8)}
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "a_s", "a_z"], ["xq"], name="q_in",
                         **({"axis": 1} if act_per_channel else {})),
        helper.make_node("DequantizeLinear", ["xq", "a_s", "a_z"], ["xd"], name="dq_in",
                         **({"axis": 1} if act_per_channel else {})),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], name="dq_w",
                         axis=w_axis),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["logits"], name="relu1"),
    ]
    return save(path, nodes, inits, **kw)
