"""Static TensorRT compatibility: op lists per TensorRT version, opsets, QDQ rules, shapes."""

import numpy as np
import onnx
import pytest
from edgeprune.compat import check_onnx
from edgeprune.errors import EdgepruneError
from edgeprune.targets import list_targets, load_target
from edgeprune.tensorrt_caps import list_op_files, load_op_list
from onnx import helper
from onnx_graphs import conv_relu, qdq_conv, save

JETSONS = [n for n in list_targets() if load_target(n).runtime == "tensorrt"]


def test_op_lists_grow_with_tensorrt():
    lists = [load_op_list(v) for v in ((8, 2, 1), (8, 5, 2), (10, 3, 0))]
    assert [o.max_opset for o in lists] == [13, 17, 20]
    assert lists[0].ops < lists[1].ops < lists[2].ops
    for must in ("Conv", "Relu", "Add", "BatchNormalization", "GlobalAveragePool", "Gemm",
                 "Concat", "Pad", "QuantizeLinear", "DequantizeLinear", "Flatten"):
        assert must in lists[0].ops
    assert load_op_list((8, 6, 1)).path.name == "ops-8.5.toml"  # never newer than the device
    assert [p.name for p in list_op_files()] == ["ops-8.2.toml", "ops-8.5.toml", "ops-10.3.toml"]


@pytest.mark.parametrize("name", JETSONS)
def test_plain_conv_graph_passes_everywhere(tmp_path, name):
    report = check_onnx(conv_relu(tmp_path / "m.onnx"), load_target(name), "fp16")
    assert report.ops == {"Conv": 1, "Relu": 1} and report.nodes == 2
    assert report.int8_mode is None and report.dynamic_inputs == []


def test_unsupported_op_names_the_node(tmp_path):
    nodes = [helper.make_node("Relu", ["input"], ["r"], name="relu1"),
             helper.make_node("Hardmax", ["r"], ["logits"], name="head/hardmax", axis=1)]
    path = save(tmp_path / "m.onnx", nodes, {}, out_shape=(3, 8, 8))
    with pytest.raises(EdgepruneError, match=r"node 'head/hardmax' \(Hardmax\) is not supported "
                       r"by the ONNX parser of TensorRT 8.2.1 \(jetson-nano\)"):
        check_onnx(path, load_target("jetson-nano"), "fp16")


def test_op_support_depends_on_the_version(tmp_path):
    # Reciprocal: N on the 8.4 page used for 8.2, Y from 8.5 on
    nodes = [helper.make_node("Reciprocal", ["input"], ["logits"], name="recip")]
    path = save(tmp_path / "m.onnx", nodes, {}, out_shape=(3, 8, 8))
    with pytest.raises(EdgepruneError, match="'recip' \\(Reciprocal\\)"):
        check_onnx(path, load_target("jetson-tx2"), "fp16")
    assert check_onnx(path, load_target("jetson-xavier-nx"), "fp16").ops == {"Reciprocal": 1}


def test_opset_newer_than_the_parser(tmp_path):
    nodes = [helper.make_node("LayerNormalization", ["input", "g"], ["logits"], name="ln",
                              axis=-1)]
    path = save(tmp_path / "m.onnx", nodes, {"g": np.ones(8, np.float32)}, opset=17,
                out_shape=(3, 8, 8))
    with pytest.raises(EdgepruneError, match="opset 17.*reads opsets up to 13"):
        check_onnx(path, load_target("jetson-nano"), "fp16")
    with pytest.raises(EdgepruneError, match="LayerNormalization"):  # opset ok, op not in 8.5
        check_onnx(path, load_target("jetson-agx-xavier"), "fp16")
    assert check_onnx(path, load_target("jetson-agx-orin"), "fp16").opset == 17


def test_custom_domain_and_qoperator_ops(tmp_path):
    nodes = [helper.make_node("Gelu", ["input"], ["logits"], name="gelu", domain="com.microsoft")]
    path = save(tmp_path / "m.onnx", nodes, {}, out_shape=(3, 8, 8))
    model = onnx.load(str(path))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
    with pytest.raises(EdgepruneError, match="'gelu' \\(Gelu\\) is in the custom domain"):
        check_onnx(path, load_target("jetson-agx-orin"), "fp16")
    nodes = [helper.make_node("DynamicQuantizeLinear", ["input"], ["y", "s", "z"], name="dq")]
    path = save(tmp_path / "q.onnx", nodes, {}, out_shape=(3, 8, 8))
    with pytest.raises(EdgepruneError, match="'dq' \\(DynamicQuantizeLinear\\) is a QOperator"):
        check_onnx(path, load_target("jetson-agx-orin"), "int8")


def test_valid_qdq_graph_is_explicit_int8(tmp_path):
    report = check_onnx(qdq_conv(tmp_path / "m.onnx"), load_target("jetson-xavier-nx"), "int8")
    assert report.int8_mode == "explicit-qdq" and report.qdq_nodes == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"act_zero": np.uint8(128)}, "'q_in' \\(QuantizeLinear\\) is uint8"),
    ({"act_zero": np.int8(3)}, "'q_in' .* non-zero zero point"),
    ({"act_scale": np.float32(-0.1)}, "'q_in' .* scale <= 0"),
    ({"act_per_channel": True}, "'q_in' .* activation per channel"),
    ({"w_axis": 1, "w_scale": np.full(3, 0.01, np.float32)}, "'dq_w' .* along axis 1"),
])
def test_qdq_rules(tmp_path, kwargs, message):
    with pytest.raises(EdgepruneError, match=message):
        check_onnx(qdq_conv(tmp_path / "m.onnx", **kwargs), load_target("jetson-agx-orin"),
                   "int8")


def test_missing_zero_point_is_uint8(tmp_path):
    nodes = [helper.make_node("QuantizeLinear", ["input", "s"], ["q"], name="q0"),
             helper.make_node("DequantizeLinear", ["q", "s"], ["logits"], name="dq0")]
    path = save(tmp_path / "m.onnx", nodes, {"s": np.float32(0.1)}, out_shape=(3, 8, 8))
    with pytest.raises(EdgepruneError, match="'q0' .* no zero point"):
        check_onnx(path, load_target("jetson-orin-nx"), "int8")


def test_int8_without_qdq_needs_calibration(tmp_path):
    report = check_onnx(conv_relu(tmp_path / "m.onnx"), load_target("jetson-orin-nano"), "int8")
    assert report.int8_mode == "implicit-calibration"
    assert "deprecated since TensorRT 10.1" in report.notes[0]


def test_dynamic_batch_needs_a_profile(tmp_path):
    path = conv_relu(tmp_path / "m.onnx", batch="batch")
    with pytest.raises(EdgepruneError, match="input 'input' has dynamic shape batchx3x8x8"):
        check_onnx(path, load_target("jetson-nano"), "fp16")
    shapes = {"input": ([1, 3, 8, 8], [4, 3, 8, 8], [8, 3, 8, 8])}
    assert check_onnx(path, load_target("jetson-nano"), "fp16",
                      shapes=shapes).dynamic_inputs == ["input"]


def test_ort_qdq_passes_only_when_symmetric(tmp_path):
    """ONNX Runtime's quantize_static: its default (uint8 asymmetric activations) is rejected,
    signed symmetric QDQ passes (the settings jetson.md asks for)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    src = conv_relu(tmp_path / "m.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.data = iter([{"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
                              for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(src), str(tmp_path / "asym.onnx"), Reader(), quant_format=QuantFormat.QDQ)
    with pytest.raises(EdgepruneError, match="uint8|non-zero zero point"):
        check_onnx(tmp_path / "asym.onnx", load_target("jetson-agx-orin"), "int8")
    quantize_static(str(src), str(tmp_path / "sym.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, extra_options={"ActivationSymmetric": True,
                                                     "WeightSymmetric": True})
    report = check_onnx(tmp_path / "sym.onnx", load_target("jetson-agx-orin"), "int8")
    assert report.int8_mode == "explicit-qdq" and report.qdq_nodes >= 3
    # float weights with a Q/DQ pair (per channel): Q of a constant is still a weight
    quantize_static(str(src), str(tmp_path / "pair.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, extra_options={"ActivationSymmetric": True,
                                                     "WeightSymmetric": True,
                                                     "AddQDQPairToWeight": True})
    report = check_onnx(tmp_path / "pair.onnx", load_target("jetson-xavier-nx"), "int8")
    assert report.ops["QuantizeLinear"] >= 2 and report.int8_mode == "explicit-qdq"


def test_exported_resnet_passes_every_jetson(tmp_path):
    import torch
    from edgeprune.export import export_onnx
    from edgeprune.models import create_model

    torch.manual_seed(0)
    export_onnx(create_model("resnet20", num_classes=10, in_channels=1), (1, 8, 8),
                tmp_path / "m.onnx")
    for name in JETSONS:
        report = check_onnx(tmp_path / "m.onnx", load_target(name), "fp16")
        assert report.ops["Conv"] >= 19 and report.opset == 13
