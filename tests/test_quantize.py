"""Quantization: calibration recipes and source, TensorRT cache, int8 (both flavours), fp16.

Binary weights are in test_quantize_binary.py, the CLI in test_quantize_cli.py.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import onnx
import pytest
from edgeprune.errors import EdgepruneError
from edgeprune.export import export_onnx, ort_session
from edgeprune.quantize import QuantizeConfig, quantize_model, read_metadata
from edgeprune.quantize.calibration import (
    CalibrationSource,
    list_recipes,
    load_recipe,
    read_trt_cache,
    write_trt_cache,
)
from edgeprune.quantize.int8 import tensorrt_qdq_problems
from edgeprune.targets import load_target
from onnx import TensorProto, numpy_helper


@pytest.fixture(scope="module")
def fp32_onnx(resnet20_digits_path, tmp_path_factory):
    from edgeprune.checkpoint import load_model

    loaded = load_model(resnet20_digits_path)
    path = tmp_path_factory.mktemp("fp32") / "model.onnx"
    export_onnx(loaded.model, tuple(loaded.info.input_shape), path)
    return path


@pytest.fixture(scope="module")
def int8_trt(resnet20_digits_path, fp32_onnx, digits, tmp_path_factory):
    """The TensorRT-flavour int8 model for jetson-nano (int8 allowed as emulated)."""
    from edgeprune.checkpoint import load_model

    out = tmp_path_factory.mktemp("int8") / "out"
    result = quantize_model(load_model(resnet20_digits_path), fp32_onnx, digits, "int8",
                            load_target("jetson-nano"), out, QuantizeConfig())
    return result


# ---------------------------------------------------------------- recipes and source


def test_a_recipe_per_data_kind():
    from edgeprune.data import DATA_KINDS

    assert set(DATA_KINDS) <= set(list_recipes())
    for kind in DATA_KINDS:
        r = load_recipe(kind)
        assert r.method in ("minmax", "entropy", "percentile") and r.samples > 0
    assert load_recipe("cifar10").input_size == (3, 32, 32)


def test_recipe_overrides_and_bad_values():
    r = load_recipe("digits").with_overrides(samples=17, method="percentile", percentile=99.9)
    assert (r.samples, r.method, r.percentile) == (17, "percentile", 99.9)
    assert load_recipe("digits").with_overrides().samples == load_recipe("digits").samples
    with pytest.raises(EdgepruneError, match="calibration set is empty"):
        load_recipe("digits").with_overrides(samples=0)
    with pytest.raises(EdgepruneError, match="unknown calibration method"):
        load_recipe("digits").with_overrides(method="kl")
    with pytest.raises(EdgepruneError, match="no calibration recipe 'nope'.*digits"):
        load_recipe("nope")


def test_user_recipe_file(tmp_path, digits):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\ninput_size = [3, 8, 8]\nsamples = 5\nmethod = "minmax"\n')
    r = load_recipe(str(path))
    assert (r.name, r.samples, r.method) == ("mine", 5, "minmax")
    with pytest.raises(EdgepruneError, match=r"expects inputs \(3, 8, 8\)"):
        CalibrationSource(digits, r)
    path.write_text('name = "bad"\nsampels = 5\n')
    with pytest.raises(EdgepruneError, match="unknown keys"):
        load_recipe(str(path))


def test_source_is_reiterable_train_only_and_preprocessed_as_inference(digits):
    src = CalibrationSource(digits, load_recipe("digits").with_overrides(samples=40),
                            batch_size=16, seed=3)
    first, second = list(src), list(src)
    assert len(src) == 40 and [b.shape[0] for b in first] == [16, 16, 8]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    # Every calibration image is a training image, normalised exactly as at inference.
    train = {x.tobytes() for x in digits.train.x}
    assert all(x.tobytes() in train for x in src.split.x)
    test = {x.tobytes() for x in digits.test.x} - train
    assert not any(x.tobytes() in test for x in src.split.x)
    np.testing.assert_array_equal(np.concatenate(first), digits.normalize(src.split.x))


# ---------------------------------------------------------------- TensorRT calibration cache


def test_trt_cache_format_round_trip(tmp_path):
    path = write_trt_cache(tmp_path / "calibration.cache", {"input": 127.0, "/conv/out": 2.5},
                           tensorrt_version="8.5.2")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8502-EntropyCalibration2"
    assert "input: 3f800000" in lines  # scale 127/127 = 1.0, big-endian float32 bits
    cache = read_trt_cache(path)
    assert cache.version == 8502 and cache.algorithm == "EntropyCalibration2"
    assert cache.scales["/conv/out"] == struct.unpack(">f", struct.pack(">f", 2.5 / 127))[0]
    assert cache.amax("/conv/out") == pytest.approx(2.5, rel=1e-6)
    bad = tmp_path / "bad.cache"
    bad.write_text("not a cache\n")
    with pytest.raises(EdgepruneError, match="not a TensorRT calibration cache"):
        read_trt_cache(bad)


# ---------------------------------------------------------------- int8


def test_int8_tensorrt_flavour_is_symmetric_s8_qdq(int8_trt):
    assert int8_trt.onnx_path.name == "model.int8.tensorrt.onnx" and int8_trt.flavour == "tensorrt"
    model = onnx.load(str(int8_trt.onnx_path))
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    inits = {i.name: i for i in model.graph.initializer}
    assert len(qdq) > 40
    for node in qdq:
        zp = inits[node.input[2]]
        assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any()
    assert not {n.op_type for n in model.graph.node} & {"QLinearConv", "ConvInteger"}
    assert tensorrt_qdq_problems(model) == []
    per_channel = [n for n in qdq if numpy_helper.to_array(inits[n.input[1]]).size > 1]
    assert per_channel  # Conv/Gemm weights are per output channel
    assert model.opset_import[0].version == 13  # what TensorRT 8.2's parser reads
    assert read_metadata(int8_trt.onnx_path)["edgeprune.precision"] == "int8"


def test_int8_accuracy_within_one_point_of_fp32(int8_trt):
    assert int8_trt.fp32_accuracy > 0.9
    assert int8_trt.accuracy >= int8_trt.fp32_accuracy - 0.01
    entry = json.loads((int8_trt.onnx_path.parent / "quantize.json").read_text())["int8"]
    assert entry["accuracy"] == int8_trt.accuracy and entry["fp32_accuracy"] > 0.9
    assert entry["flavour"] == "tensorrt" and entry["runtime"] == "tensorrt"
    assert entry["calibration"]["source"] == "train split"


def test_calibration_cache_parses_back_and_matches_the_qdq_scales(int8_trt, fp32_onnx):
    cache = read_trt_cache(int8_trt.calibration_cache)
    assert cache.version == 8201  # jetson-nano's TensorRT 8.2.1
    fp32_tensors = {o for n in onnx.load(str(fp32_onnx)).graph.node for o in n.output}
    assert "input" in cache.scales and set(cache.scales) - {"input"} <= fp32_tensors
    assert all(s > 0 for s in cache.scales.values())
    # The explicit (QDQ) and implicit (cache) int8 paths use the same calibrated ranges: equal
    # for the input and ReLU outputs; ORT may narrow a range feeding a ReLU (negatives are cut
    # anyway) and gives Slice/Pad outputs their input's range, so elsewhere only "not wider".
    model = onnx.load(str(int8_trt.onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n.op_type for n in onnx.load(str(fp32_onnx)).graph.node for o in n.output}
    equal = 0
    for node in model.graph.node:
        name = node.input[0]
        if node.op_type != "QuantizeLinear" or name not in cache.scales:
            continue
        scale, cached = float(inits[node.input[1]]), cache.scales[name]
        if name == "input" or producer.get(name) == "Relu":
            assert scale == pytest.approx(cached, rel=1e-5), name
            equal += 1
        elif producer.get(name) not in ("Slice", "Pad"):
            assert scale <= cached * (1 + 1e-5), name
    assert equal > 15


def test_int8_ort_cpu_flavour_for_the_host(resnet20_digits, fp32_onnx, digits, tmp_path):
    config = QuantizeConfig(calibration_samples=64, calibration_method="minmax")
    r = quantize_model(resnet20_digits, fp32_onnx, digits, "int8", load_target("host-cpu"),
                       tmp_path / "out", config)
    assert r.onnx_path.name == "model.int8.ort-cpu.onnx" and r.flavour == "ort-cpu"
    model = onnx.load(str(r.onnx_path))
    inits = {i.name: i for i in model.graph.initializer}
    act = [n for n in model.graph.node if n.op_type == "QuantizeLinear"
           and n.input[0] not in inits]
    assert act and all(inits[n.input[2]].data_type == TensorProto.UINT8 for n in act)
    weights = [i for i in model.graph.initializer if i.data_type == TensorProto.INT8
               and numpy_helper.to_array(i).ndim == 4]
    assert weights  # int8 conv weights stored as int8: the file shrinks
    assert r.summary["size_bytes"] < r.summary["fp32_size_bytes"] / 2
    assert tensorrt_qdq_problems(model)  # not for TensorRT, and the check says so
    assert r.accuracy >= r.fp32_accuracy - 0.02
    assert r.summary["calibration"]["samples"] == 64


def test_int8_flavours_never_share_a_file_name(int8_trt, tmp_path):
    assert "tensorrt" in int8_trt.onnx_path.name
    with pytest.raises(EdgepruneError, match="unknown int8 flavour"):
        from edgeprune.quantize.int8 import flavour_for

        flavour_for(load_target("host-cpu"), "tflite")


# ---------------------------------------------------------------- fp16


def test_fp16_parity_and_accuracy(resnet20_digits, fp32_onnx, digits, tmp_path):
    out = tmp_path / "out"
    r = quantize_model(resnet20_digits, fp32_onnx, digits, "fp16", load_target("jetson-nano"),
                       out, QuantizeConfig())
    assert r.onnx_path.name == "model.fp16.onnx"
    model = onnx.load(str(r.onnx_path))
    onnx.checker.check_model(model)  # topologically sorted, valid
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    parity = r.summary["parity"]
    assert parity["max_abs_diff"] <= 1e-2 * max(1.0, parity["output_scale"])
    assert parity["top1_agreement"] == 1.0
    assert abs(r.accuracy - r.fp32_accuracy) <= 0.005
    assert "--fp16" in r.summary["tensorrt"]
    assert read_metadata(r.onnx_path)["edgeprune.precision"] == "fp16"
    x = digits.normalize(digits.test.x[:1])
    a = ort_session(fp32_onnx).run(None, {"input": x})[0]
    b = ort_session(r.onnx_path).run(None, {"input": x})[0]
    assert np.abs(a - b).max() <= 1e-2 * max(1.0, np.abs(a).max())


def test_quantize_json_merges_precisions(resnet20_digits, fp32_onnx, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "quantize.json").write_text(json.dumps({"other": {"file": "x"}}))
    # fp16 without data: no accuracy, but parity on random inputs still runs
    r = quantize_model(resnet20_digits, fp32_onnx, None, "fp16", load_target("host-cpu"), out,
                       QuantizeConfig())
    doc = json.loads((out / "quantize.json").read_text())
    assert set(doc) == {"other", "fp16"} and r.accuracy is None
    with pytest.raises(EdgepruneError, match="needs data"):
        quantize_model(resnet20_digits, fp32_onnx, None, "int8", load_target("host-cpu"), out,
                       QuantizeConfig())
    with pytest.raises(EdgepruneError, match="unknown precision"):
        quantize_model(resnet20_digits, fp32_onnx, None, "int4", load_target("host-cpu"), out,
                       QuantizeConfig())


def test_int8_tensorrt_flavour_places_qdq_as_tensorrt_fuses(int8_trt):
    """Q/DQ on Conv/Gemm/Add inputs, none on Conv outputs: the profile sees fused int8 kernels
    (Conv→ReLU→Q writes int8), not a float ReLU with conversions around every convolution."""
    from edgeprune.profile.accounting import account

    model = onnx.load(str(int8_trt.onnx_path))
    producers = {o: n for n in model.graph.node for o in n.output}
    relu_inputs = [producers.get(n.input[0]) for n in model.graph.node if n.op_type == "Relu"]
    assert relu_inputs and all(p.op_type != "DequantizeLinear" for p in relu_inputs)
    acc = account(model, "int8")
    kernels = [n for n in acc.nodes if not n.fused]
    relus = [n for n in acc.nodes if n.op_type == "Relu"]
    assert all(n.precision == "int8" for n in kernels if n.op_type in ("Conv", "Gemm"))
    assert sum(n.precision == "int8" for n in relus) >= len(relus) - 1  # all but the last
    conversions = [n for n in kernels if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(conversions) <= 8  # only around the float shortcut slices and the pooled tail
