"""Per-node accounting, peak activation memory and latency, on real ONNX files."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from edgeprune.complexity import model_complexity
from edgeprune.export import export_onnx
from edgeprune.models import create_model
from edgeprune.profile import account, detect_precision, profile_variant
from edgeprune.profile.latency import estimate_latency_ms, node_time_s
from edgeprune.profile.memory import peak_activation_memory
from edgeprune.targets import load_target
from onnx import TensorProto, helper
from torch import nn


class SmallNet(nn.Module):
    """1×8×8 input: conv 1→4 (3×3, pad 1), ReLU, conv 4→8 (3×3, stride 2, pad 1), ReLU,
    fc 128→10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    export_onnx(SmallNet(), (1, 8, 8), path)
    return path


def test_macs_params_and_bytes_per_layer_match_hand_counts(small_onnx):
    acc = account(onnx.load(str(small_onnx)), "fp32")
    mac_nodes = [n for n in acc.nodes if n.macs]
    # conv1: 4×8×8 outputs × (1×3×3); conv2: 8×4×4 × (4×3×3); fc: 10 × 128
    assert [n.op_type for n in mac_nodes] == ["Conv", "Conv", "Gemm"]
    assert [n.macs for n in mac_nodes] == [4 * 8 * 8 * 9, 8 * 4 * 4 * 36, 10 * 128]
    assert [n.params for n in mac_nodes] == [4 * 9 + 4, 8 * 36 + 8, 128 * 10 + 10]
    assert [n.weight_bytes for n in mac_nodes] == [4 * p for p in (40, 296, 1290)]
    assert [n.output_shape for n in mac_nodes] == [[1, 4, 8, 8], [1, 8, 4, 4], [1, 10]]
    # conv1 reads the 1×8×8 input and writes 4×8×8 floats
    assert (mac_nodes[0].act_read_bytes, mac_nodes[0].act_write_bytes) == (64 * 4, 256 * 4)
    relu = next(n for n in acc.nodes if n.op_type == "Relu")
    assert relu.elements == 256 and relu.macs == 0 and relu.fused
    half = account(onnx.load(str(small_onnx)), "fp16")
    assert [n.weight_bytes for n in half.nodes if n.macs] == [2 * p for p in (40, 296, 1290)]
    assert half.nodes[0].act_write_bytes == 256 * 2


def test_totals_agree_with_pytorch_counts(tmp_path):
    model = create_model("resnet20", num_classes=10, in_channels=3)
    path = tmp_path / "r20.onnx"
    export_onnx(model, (3, 16, 16), path)
    acc = account(onnx.load(str(path)), "fp32")
    ref = model_complexity(model, (3, 16, 16))
    assert acc.macs == ref.macs  # Conv and Gemm are counted exactly on both sides
    # BatchNorm folds into the convs (γ, β become one bias): params agree within 1%
    assert abs(acc.params - ref.params) / ref.params < 0.01


def _graph(nodes, inp, out, dtype=TensorProto.FLOAT):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", dtype, inp)],
                          [helper.make_tensor_value_info("Y", dtype, out)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_peak_activation_memory_on_a_hand_built_graph():
    # X[100] → A=Relu(X) → B=Concat(A,A)[200] → C=Relu(B) → D=Concat(C,A)[300] → Y=Relu(D).
    # Live bytes (fp32) while each node runs: n0 X+A = 800; n1 A+B = 1200; n2 A+B+C = 2000;
    # n3 A+C+D = 400+800+1200 = 2400 (A is needed until here); n4 D+Y = 2400 (not higher).
    nodes = [helper.make_node("Relu", ["X"], ["A"], name="n0"),
             helper.make_node("Concat", ["A", "A"], ["B"], axis=1, name="n1"),
             helper.make_node("Relu", ["B"], ["C"], name="n2"),
             helper.make_node("Concat", ["C", "A"], ["D"], axis=1, name="n3"),
             helper.make_node("Relu", ["D"], ["Y"], name="n4")]
    model = _graph(nodes, [1, 100], [1, 300])
    onnx.checker.check_model(model)
    peak = peak_activation_memory(account(model, "fp32"))
    assert (peak.bytes, peak.node) == (2400, "n3")
    assert peak_activation_memory(account(model, "fp16")).bytes == 1200


def test_weights_behind_dq_and_constant_chains_are_not_activations():
    # X[1,4,4,4] → Conv(W) → Y, where W = DQ(Wq int8 [64,4,3,3]) and the bias comes from a
    # Constant node through Mul by an initializer (a chain a runtime folds). Only X and Y are
    # activations: 64 + 1024 bytes (1 byte each at the int8 conv), whatever the weight size.
    from onnx import numpy_helper

    wq = numpy_helper.from_array(np.ones((64, 4, 3, 3), np.int8), "Wq")
    scale = numpy_helper.from_array(np.float32(0.1), "s")
    two = numpy_helper.from_array(np.float32(2), "two")
    bias = helper.make_tensor("b", TensorProto.FLOAT, [64], np.zeros(64, np.float32))
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "s"], ["W"], name="dq_w"),
             helper.make_node("Constant", [], ["B0"], value=bias, name="const_b"),
             helper.make_node("Mul", ["B0", "two"], ["B"], name="fold_b"),
             helper.make_node("Conv", ["X", "W", "B"], ["Y"], pads=[1, 1, 1, 1], name="conv")]
    model = _graph(nodes, [1, 4, 4, 4], [1, 64, 4, 4])
    model.graph.initializer.extend([wq, scale, two])
    onnx.checker.check_model(model)
    acc = account(model, "int8")
    peak = peak_activation_memory(acc)
    assert (peak.bytes, peak.node) == (64 + 64 * 16, "conv")
    assert acc.nodes[0].output_shape == [64, 4, 3, 3]  # still shown in the layer table
    assert acc.nodes[2].elements == 0 and acc.nodes[2].writes == []  # folded at build time


@pytest.fixture(scope="module")
def quantized_resnet(resnet20_digits_path, digits, tmp_path_factory):
    """The trained ResNet-20 as fp32 ONNX and int8 in both flavours (TensorRT: float weights
    behind Q→DQ; ONNX Runtime CPU: int8 weights behind DQ)."""
    from edgeprune.checkpoint import load_model
    from edgeprune.quantize import QuantizeConfig, quantize_model

    d = tmp_path_factory.mktemp("quantized")
    loaded = load_model(resnet20_digits_path)
    fp32 = d / "model.onnx"
    export_onnx(loaded.model, tuple(loaded.info.input_shape), fp32)
    int8 = {t: quantize_model(load_model(resnet20_digits_path), fp32, digits, "int8",
                              load_target(t), d / t, QuantizeConfig()).onnx_path
            for t in ("jetson-xavier-nx", "host-cpu")}
    return fp32, int8


def test_int8_peak_activation_memory_is_below_fp32(quantized_resnet):
    fp32, int8 = quantized_resnet
    fp32_peak = peak_activation_memory(account(onnx.load(str(fp32)), "fp32"))
    fp16_peak = peak_activation_memory(account(onnx.load(str(fp32)), "fp16"))
    for target, path in int8.items():
        acc = account(onnx.load(str(path)), "int8")
        peak = peak_activation_memory(acc)
        assert peak.bytes <= fp16_peak.bytes < fp32_peak.bytes, (target, peak, fp32_peak)
        assert acc.node_inputs[peak.index]  # the peak is at a node on the data path
        # no weight's Q/DQ output is ever live activation memory
        dq = [i for i, n in enumerate(acc.nodes) if n.op_type == "DequantizeLinear"
              and not acc.node_inputs[i]]
        assert dq and all(acc.node_outputs[i] == [] for i in dq)


def _quantize_int8(src, dst):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"input": rng.standard_normal((1, 1, 8, 8)).astype(np.float32)}
                            for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, extra_options={"ActivationSymmetric": True})


def test_qdq_int8_weights_belong_to_their_conv(small_onnx, tmp_path):
    q = tmp_path / "small.int8.onnx"
    _quantize_int8(small_onnx, q)
    model = onnx.load(str(q))
    assert detect_precision(model) == "int8"
    acc = account(model, "int8")
    convs = [n for n in acc.nodes if n.op_type == "Conv"]
    assert [n.precision for n in convs] == ["int8", "int8"]
    assert [n.macs for n in convs] == [2304, 4608]
    # conv2: 288 int8 weights (1 B) + 8 int32 biases, plus the per-channel quantization
    # parameters at their stored types: weight scales (fp32) and zero points (int8), bias
    # scales (fp32) and zero points (int32)
    assert convs[1].params == 296
    assert convs[1].weight_bytes == 288 + 8 * 4 + (8 * 4 + 8) + (8 * 4 + 8 * 4)
    assert all(n.params == 0 for n in acc.nodes if n.op_type.endswith("QuantizeLinear"))


def test_binary_weights_and_activations_from_metadata(small_onnx):
    model = onnx.load(str(small_onnx))
    conv2 = [n for n in model.graph.node if n.op_type == "Conv"][1]
    helper.set_model_props(model, {"edgeprune.binary_weights": json.dumps([conv2.input[1]])})
    assert detect_precision(model) == "binary"
    node = [n for n in account(model, "binary").nodes if n.op_type == "Conv"][1]
    # 288 weights at 1 bit + 8 fp32 scales + 8 fp32 biases
    assert node.precision == "binary" and not node.binary_activations
    assert node.weight_bytes == math.ceil((288 + 8 * 32 + 8 * 32) / 8)
    helper.set_model_props(model, {"edgeprune.binary_weights": json.dumps([conv2.input[1]]),
                                   "edgeprune.binary_activations": "true"})
    node = [n for n in account(model, "binary").nodes if n.op_type == "Conv"][1]
    assert node.binary_activations and node.act_read_bytes == 256 // 8  # 4×8×8 inputs, 1 bit


def test_target_estimate_is_a_roofline_plus_launch(small_onnx):
    target = load_target("jetson-nano")
    acc = account(onnx.load(str(small_onnx)), "fp16")
    conv = next(n for n in acc.nodes if n.op_type == "Conv")
    est = target.section("estimate")
    compute = conv.macs * 2 / (target.peak_ops_per_s["fp16"] * est["efficiency"])
    memory = (conv.weight_bytes + conv.act_read_bytes + conv.act_write_bytes) / \
        target.bandwidth_bytes_per_s
    assert node_time_s(conv, target) == pytest.approx(
        max(compute, memory) + est["launch_overhead_us"] * 1e-6)
    total, per = estimate_latency_ms(acc.nodes, target)
    assert total == pytest.approx(sum(per)) and total > 0
    assert all(t == 0 for n, t in zip(acc.nodes, per) if n.fused)


def test_host_cpu_target_describes_an_onnxruntime_cpu():
    t = load_target("host-cpu")
    assert t.runtime == "onnxruntime-cpu" and t.section("cpu") and not t.section("gpu")
    assert t.fast_precisions == ["fp32", "int8"] and t.on_chip_bytes > 0
    assert t.peak_ops_per_s["int8"] > t.peak_ops_per_s["fp32"] > 0
    assert {"efficiency", "launch_overhead_us"} <= set(t.section("estimate"))


def test_profile_variant_measures_the_host(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "dyn.onnx"
    export_onnx(SmallNet(), (1, 8, 8), path, dynamic_batch=True)
    v = profile_variant(path, load_target("host-cpu"), name="small", precision="fp32",
                        accuracy=0.5, batch=4)
    host = v["latency_ms"]["host_measured"]
    assert 0 < host["median"] <= host["p90"] and host["threads"] >= 1 and host["runs"] >= 10
    assert host["batch"] == 1 and v["latency_ms"]["host_measured_batch"]["batch"] == 4
    assert v["latency_ms"]["target_measured"]["median"] == host["median"]  # host-cpu: the same
    assert v["macs"] == 2304 + 4608 + 1280 and v["peak_activation_bytes"] > 0
    assert v["energy_mj"]["total"] == pytest.approx(sum(r["energy_mj"]["total"]
                                                        for r in v["layers"]))
