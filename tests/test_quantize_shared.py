"""Deep Compression: 1-D k-means, per-cluster gradients, Huffman round trip, precision shared."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from edgeprune.checkpoint import load_model
from edgeprune.errors import EdgepruneError
from edgeprune.export import export_onnx
from edgeprune.quantize import QuantizeConfig, quantize_model, read_metadata
from edgeprune.quantize import shared as S
from edgeprune.targets import load_target
from torch import nn


def test_kmeans_1d_linear_init_and_exact_lloyd():
    w = np.array([0.0, 0.1, 0.2, 5.0, 5.2, 10.0])
    codebook, index = S.kmeans_1d(w, 3)
    assert np.allclose(codebook, [0.1, 5.1, 10.0])
    assert index.tolist() == [0, 0, 0, 1, 1, 2]


def test_centroid_gradient_is_sum_of_its_weights_gradients():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 1.0, 0.05], [1.02, 0.01, 0.98]]))
    S.share_weights(lin, 1, [""])
    x = torch.tensor([[1.0, 2.0, 3.0]])
    lin(x).sum().backward()
    # dL/dW_ij = x_j for every row; cluster 0 holds W[0,0], W[0,2], W[1,1]; cluster 1 the rest
    p = lin.parametrizations.weight[0]
    assert p.index.tolist() == [[0, 1, 0], [1, 0, 1]]
    assert torch.allclose(p.codebook.grad, torch.tensor([1.0 + 3.0 + 2.0, 2.0 + 1.0 + 3.0]))


@pytest.mark.parametrize("counts", [[5, 1, 1, 1], [1, 0, 0, 7], [3], [1, 1, 2, 3, 5, 8, 13, 21]])
def test_huffman_round_trip_and_optimal_length(counts):
    rng = np.random.default_rng(0)
    symbols = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    lengths, stream, nbits = S.huffman_encode(symbols, len(counts))
    assert np.array_equal(S.huffman_decode(stream, nbits, lengths, len(symbols)), symbols)
    assert nbits == int(sum(np.array(counts) * lengths))
    used = np.array(counts) > 0
    kraft = sum(2.0 ** -lengths[used].astype(float))
    assert np.isclose(kraft, 1.0) or used.sum() == 1  # a complete prefix code


def test_huffman_lengths_hand_case():
    # counts 5,1,1,1 -> lengths 1,3,3,2 (or 1,2,3,3): total bits 5 + 2 + 3 + 3 = 13
    lengths = S.huffman_lengths(np.array([5, 1, 1, 1]))
    assert lengths[0] == 1 and sorted(lengths[1:].tolist()) == [2, 3, 3]


def test_pack_round_trip_is_exact_and_smaller():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 10))
    names = S.share_weights(model, 4)
    S.freeze_shared(model, names)
    state = model.state_dict()
    shared = S.shared_tensors(state, names, 16)
    assert shared == {"0.weight", "3.weight"}
    back = S.unpack(S.pack(state, shared))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) and back[k].dtype == state[k].dtype for k in state)
    sizes = S.storage_sizes(state, shared)
    assert len(S.pack(state, shared)) < sizes["fp32"] / 4


def test_bad_magic_is_refused():
    with pytest.raises(EdgepruneError, match="bad magic"):
        S.unpack(b"not a file at all")


def test_bits_out_of_range_are_refused():
    with pytest.raises(EdgepruneError, match="1..8"):
        S.share_weights(nn.Linear(2, 2), 9)


@pytest.fixture(scope="module")
def shared_result(resnet20_digits_path, digits, tmp_path_factory):
    loaded = load_model(resnet20_digits_path)
    tmp = tmp_path_factory.mktemp("shared")
    export_onnx(loaded.model, tuple(loaded.info.input_shape), tmp / "model.onnx")
    return quantize_model(loaded, tmp / "model.onnx", digits, "shared", load_target("jetson-nano"),
                          tmp / "out", QuantizeConfig(shared_bits=4, shared_epochs=1)), tmp


def test_shared_precision_on_digits(shared_result):
    result, tmp = shared_result
    s = result.summary
    out = tmp / "out"
    assert (out / "model.shared.onnx").is_file() and (out / "model.shared.packed").is_file()
    assert read_metadata(out / "model.shared.onnx")["edgeprune.precision"] == "shared"
    b = s["storage_bytes"]
    # 4-bit indices, Huffman-coded: well under an eighth of fp32, below int8 and fixed width
    assert b["shared_huffman"] < b["int8"] < b["fp16"] < b["fp32"]
    assert b["shared_huffman"] < b["shared_fixed_width"]
    assert b["fp32"] / b["shared_huffman"] > 6
    assert "latency" in s["deployment_note"]
    # 16 shared values per layer, fine-tuned one epoch: within 2 points of fp32 on digits
    # (measured: 98.3% against 98.6%)
    assert result.accuracy > result.fp32_accuracy - 0.02
    assert s["accuracy_after_finetune"] >= s["accuracy_before_finetune"] - 0.01
    doc = json.loads((out / "quantize.json").read_text())
    assert doc["shared"]["packed"]["bytes"] == (out / "model.shared.packed").stat().st_size


def test_packed_file_loads_into_the_model_exactly(shared_result, resnet20_digits_path):
    _, tmp = shared_result
    state = S.load_packed(tmp / "out" / "model.shared.packed")
    model = load_model(resnet20_digits_path).model
    model.load_state_dict(state)
    for name in S.shareable_layers(model):
        assert len(torch.unique(dict(model.named_modules())[name].weight)) <= 16


def test_report_shows_stored_sizes_and_the_deployment_note(shared_result):
    from edgeprune.report.format import storage_section

    result, _ = shared_result
    blocks = storage_section(result.summary)
    rows = {r[0]: r for r in blocks[1][2]}
    assert set(rows) >= {"fp32", "fp16", "int8 (per-tensor scale)",
                         "shared + Huffman (packed file)"}
    assert "DRAM traffic" in blocks[2][1] and "storage and download" in blocks[2][1]
    assert storage_section({"storage_bytes": {"fp32": 4}}) == []  # not a shared build
