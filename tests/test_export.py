"""ONNX export: checker, simplification, and parity with PyTorch under ONNX Runtime."""

import numpy as np
import onnx
import pytest
import torch
from edgeprune.export import OPSET, export_onnx, onnx_accuracy, ort_session
from edgeprune.models import create_model


@pytest.mark.parametrize("name", ["resnet20", "densenet_bc100"])
def test_export_parity(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    report = export_onnx(model, (3, 32, 32), tmp_path / "m.onnx")
    assert report.max_abs_diff <= 1e-4 and report.opset == OPSET
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert graph.opset_import[0].version == OPSET
    n_conv = sum(n.op_type == "Conv" for n in graph.graph.node)
    assert n_conv == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def test_dynamic_batch(tmp_path):
    model = create_model("resnet20").eval()
    export_onnx(model, (3, 32, 32), tmp_path / "m.onnx", dynamic_batch=True)
    sess = ort_session(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    out = sess.run(None, {"input": x})[0]
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, model(torch.from_numpy(x)).detach().numpy(), atol=1e-4)


def test_onnx_accuracy_matches_pytorch(resnet20_digits, digits, tmp_path):
    from edgeprune.checkpoint import data_for_model
    from edgeprune.train import evaluate

    data = data_for_model(resnet20_digits, digits)
    export_onnx(resnet20_digits.model, (1, 8, 8), tmp_path / "m.onnx")
    assert onnx_accuracy(tmp_path / "m.onnx", data) == pytest.approx(
        evaluate(resnet20_digits.model, data).accuracy)
