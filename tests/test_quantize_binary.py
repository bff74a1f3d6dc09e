"""Binary (1-bit) weights: STE, layer choice, fine-tune, ONNX export, packed format."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from edgeprune.checkpoint import LoadedModel, ModelInfo
from edgeprune.errors import EdgepruneError
from edgeprune.export import export_onnx, ort_session
from edgeprune.quantize import QuantizeConfig, quantize_model, read_metadata
from edgeprune.quantize import binary as B
from edgeprune.targets import load_target
from onnx import numpy_helper
from torch import nn


@pytest.fixture(scope="module")
def binary_result(resnet20_digits_path, digits, tmp_path_factory):
    from edgeprune.checkpoint import load_model

    loaded = load_model(resnet20_digits_path)
    tmp = tmp_path_factory.mktemp("binary")
    export_onnx(loaded.model, tuple(loaded.info.input_shape), tmp / "model.onnx")
    return quantize_model(loaded, tmp / "model.onnx", digits, "binary", load_target("jetson-nano"),
                          tmp / "out", QuantizeConfig(binary_epochs=2))


def test_binarize_weight_is_sign_times_channel_mean():
    w = torch.tensor([[[[0.5, -1.5]]], [[[-0.2, 0.0]]]])
    b = B.binarize_weight(w)
    assert torch.equal(b, torch.tensor([[[[1.0, -1.0]]], [[[-0.1, 0.1]]]]))


def test_straight_through_gradient_passes_only_where_abs_w_at_most_one():
    w = torch.tensor([[0.3, -2.0, 1.0, -0.7]], requires_grad=True)
    out = B.ste(w, B.binarize_weight(w))
    out.backward(torch.ones_like(out))
    assert torch.equal(w.grad, torch.tensor([[1.0, 0.0, 1.0, 1.0]]))
    assert torch.allclose(out, B.binarize_weight(w))


def test_layer_choice_keeps_first_conv_and_classifier(resnet20_digits):
    names = B.binarizable_layers(resnet20_digits.model)
    assert "conv1" not in names and "fc" not in names and len(names) == 18
    all_layers = B.binarizable_layers(resnet20_digits.model, skip_first=False,
                                      skip_classifier=False)
    assert {"conv1", "fc"} <= set(all_layers) and len(all_layers) == 20


def test_binary_model_finetunes_and_exports_binarized_values(binary_result):
    s = binary_result.summary
    assert s["accuracy_after_finetune"] > s["accuracy_before_finetune"]
    assert s["accuracy_after_finetune"] >= 0.85 and binary_result.accuracy >= 0.85
    assert binary_result.fp32_accuracy > 0.9 and len(s["finetune"]["losses"]) == 2
    meta = read_metadata(binary_result.onnx_path)
    assert meta["edgeprune.precision"] == "binary"
    assert meta["edgeprune.binary_activations"] == "false"
    names = json.loads(meta["edgeprune.binary_weights"])
    model = onnx.load(str(binary_result.onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert len(names) == 18 and set(names) <= set(inits)
    for name in names:  # one magnitude per output channel: 1 bit + a scale
        w = np.abs(inits[name].reshape(inits[name].shape[0], -1))
        assert np.all(w == w[:, :1])
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv").input[1]
    assert first_conv not in names


def test_packed_weights_round_trip_bit_exact_and_are_small(binary_result, tmp_path):
    out = binary_result.onnx_path.parent
    model = onnx.load(str(binary_result.onnx_path))
    names = json.loads(read_metadata(binary_result.onnx_path)["edgeprune.binary_weights"])
    original = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
                if i.name in names}
    unpacked = B.load_packed(out / "model.binary.packed")
    assert set(unpacked) == set(original)
    for name, w in original.items():
        assert unpacked[name].dtype == np.float32
        assert np.array_equal(unpacked[name].view(np.uint32), w.view(np.uint32))
    fp32_bytes = sum(w.nbytes for w in original.values())
    packed = (out / "model.binary.packed").stat().st_size
    assert packed <= fp32_bytes / 28
    assert binary_result.summary["packed"]["bytes"] == packed
    # A device-side loader: zero the weights, put the unpacked ones back, same outputs.
    for init in model.graph.initializer:
        if init.name in names:
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(original[init.name]), init.name))
    B.apply_packed(model, unpacked)
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    a = ort_session(binary_result.onnx_path).run(None, {"input": x})[0]
    onnx.save(model, str(tmp_path / "loaded.onnx"))
    b = ort_session(tmp_path / "loaded.onnx").run(None, {"input": x})[0]
    np.testing.assert_array_equal(a, b)


def test_pack_refuses_non_binary_and_bad_files():
    with pytest.raises(EdgepruneError, match="not binarized"):
        B.pack({"w": np.array([[1.0, 0.5]], np.float32)})
    with pytest.raises(EdgepruneError, match="bad magic"):
        B.unpack(b"not packed at all")


class _Tiny(nn.Module):
    def __init__(self, hidden: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1) if hidden else None
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        if self.conv2 is not None:
            x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def _tiny_loaded(hidden: bool) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(_Tiny(hidden).eval(), ModelInfo("tiny", 10, (1, 8, 8)))


def test_binary_activations_export_sign(digits, tmp_path):
    loaded = _tiny_loaded(hidden=True)
    export_onnx(loaded.model, (1, 8, 8), tmp_path / "model.onnx")
    r = quantize_model(loaded, tmp_path / "model.onnx", digits, "binary",
                       load_target("host-cpu"), tmp_path / "out",
                       QuantizeConfig(binary_epochs=1, binary_activations=True))
    model = onnx.load(str(r.onnx_path))
    assert "Sign" in {n.op_type for n in model.graph.node}
    assert read_metadata(r.onnx_path)["edgeprune.binary_activations"] == "true"
    assert r.summary["accuracy_before_finetune"] is not None and r.accuracy is not None


def test_nothing_to_binarize_is_a_clear_error_and_writes_nothing(digits, tmp_path):
    loaded = _tiny_loaded(hidden=False)
    export_onnx(loaded.model, (1, 8, 8), tmp_path / "model.onnx")
    out = tmp_path / "out"
    with pytest.raises(EdgepruneError, match="no Conv/Linear layer to binarize"):
        quantize_model(loaded, tmp_path / "model.onnx", digits, "binary",
                       load_target("host-cpu"), out, QuantizeConfig(binary_epochs=1))
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no staging left
