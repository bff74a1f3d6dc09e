"""Model files: the checkpoint round trip, pickled modules, and broken files."""

import pytest
import torch
from edgeprune.checkpoint import ModelInfo, data_for_model, load_model, save_checkpoint
from edgeprune.errors import EdgepruneError
from edgeprune.models import create_model


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4).eval()
    info = ModelInfo("resnet20", 4, (3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                     ["a", "b", "c", "d"])
    path = save_checkpoint(tmp_path / "m.pt", model, info)
    loaded = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.model(x), model(x))
    assert loaded.info.input_shape == (3, 32, 32) and loaded.info.class_names[3] == "d"
    assert loaded.info.mean == (0.5, 0.5, 0.5)
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(create_model("resnet20", num_classes=3), path)
    with pytest.raises(EdgepruneError, match="--trust-model"):
        load_model(path)
    loaded = load_model(path, trust_model=True)
    assert loaded.info.num_classes == 3 and loaded.info.arch == "resnet20"


@pytest.mark.parametrize("content,match", [(b"", "is empty"),
                                           (b"not a zip or pickle", "not a PyTorch model")])
def test_broken_files(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(EdgepruneError, match=match):
        load_model(path)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("resnet20"),
                           ModelInfo("resnet20", 10, (3, 32, 32)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgepruneError, match="corrupt or truncated"):
        load_model(path)


def test_other_objects_and_missing_file(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(EdgepruneError, match="neither an edgeprune checkpoint"):
        load_model(path)
    with pytest.raises(EdgepruneError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "m.pt"
    ckpt = {"arch": "resnet32", "num_classes": 10,
            "state_dict": create_model("resnet20").state_dict()}
    torch.save(ckpt, path)
    with pytest.raises(EdgepruneError, match="do not fit architecture 'resnet32'"):
        load_model(path)


def test_data_mismatch(resnet20_digits, tmp_path):
    import numpy as np
    from edgeprune.data import load_dataset

    f = tmp_path / "rgb.npz"
    x = np.zeros((20, 3, 8, 8), np.uint8)
    np.savez(f, x_train=x, y_train=np.arange(20) % 10, x_test=x[:10], y_test=np.arange(10))
    with pytest.raises(EdgepruneError, match=r"shape \(1, 8, 8\)"):
        data_for_model(resnet20_digits, load_dataset(f"npz:{f}"))
    f2 = tmp_path / "k3.npz"
    x = np.zeros((20, 1, 8, 8), np.uint8)
    np.savez(f2, x_train=x, y_train=np.arange(20) % 3, x_test=x[:3], y_test=np.arange(3))
    with pytest.raises(EdgepruneError, match="10 classes"):
        data_for_model(resnet20_digits, load_dataset(f"npz:{f2}"))


def _pickled_net(tmp_path, **attrs):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 7))
    for k, v in attrs.items():
        setattr(net, k, v)
    torch.save(net, tmp_path / "net.pt")
    return tmp_path / "net.pt"


def test_pickled_module_input_shape_recorded_given_or_refused(tmp_path):
    from edgeprune.checkpoint import with_input_shape
    from edgeprune.export import export_onnx

    loaded = load_model(_pickled_net(tmp_path, input_shape=(1, 8, 8)), trust_model=True)
    assert loaded.info.input_shape == (1, 8, 8) and loaded.info.num_classes == 7
    report = export_onnx(loaded.model, with_input_shape(loaded), tmp_path / "a.onnx")
    assert report.max_abs_diff < 1e-4
    bare = load_model(_pickled_net(tmp_path), trust_model=True)
    with pytest.raises(EdgepruneError, match="records no input shape"):
        with_input_shape(bare)
    with pytest.raises(EdgepruneError, match="pass --input-shape"):
        with_input_shape(bare, guess=True)  # the guess, 1×32×32, does not fit its Linear
    assert with_input_shape(bare, "1,8,8") == (1, 8, 8)


def test_non_finite_weights_are_refused_at_load(tmp_path):
    state = create_model("resnet20").state_dict()
    state["layer1.0.bn1.running_var"][3] = float("inf")
    torch.save({"arch": "resnet20", "num_classes": 10, "state_dict": state}, tmp_path / "m.pt")
    with pytest.raises(EdgepruneError, match=r"infinite weights \(in layer1.0.bn1.running_var\)"):
        load_model(tmp_path / "m.pt")
