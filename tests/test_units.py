"""The skip-unit interface: listing, gates (α = 0 is exactly the shortcut), feature capture."""

import pytest
import torch
import torch.nn.functional as F
from edgeprune.models import create_model
from edgeprune.units import DENSE, IDENTITY, PROJECTION, capture_branch_outputs, gated, list_units


def _eval(name, **kw):
    torch.manual_seed(0)
    model = create_model(name, **kw).eval()
    # Non-trivial BN statistics, so that "branch ≠ 0" is visible.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def test_resnet20_unit_list():
    units = list_units(create_model("resnet20"))
    assert [u.stage for u in units] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [u.kind for u in units] == [IDENTITY] * 3 + [PROJECTION] + [IDENTITY] * 2 + \
        [PROJECTION] + [IDENTITY] * 2
    assert units[4].name == "layer2.1"


@pytest.mark.parametrize("name,index", [("resnet20", 4), ("resnet20", 3), ("resnet164", 0),
                                        ("resnet18", 2), ("resnet50", 4)])
def test_gate_zero_is_exactly_the_shortcut(name, index):
    model = _eval(name)
    unit = list_units(model)[index]
    block = unit.module
    x = torch.randn(2, block.conv1.in_channels, 16, 16)
    shortcut = x if block.downsample is None else block.downsample(x)
    expected = shortcut if name == "resnet164" else F.relu(shortcut)  # pre-act: no post-merge act
    with torch.no_grad(), gated(model, {index: 0.0}):
        got = block(x)
        assert torch.equal(got, expected)
    with torch.no_grad():
        assert not torch.equal(block(x), expected)  # hooks removed: the branch is back


@pytest.mark.parametrize("name", ["densenet_bc100", "densenet121"])
def test_dense_gate_zeroes_its_channels(name):
    model = _eval(name)
    units = list_units(model)
    assert all(u.kind == DENSE for u in units)
    block = model.features.denseblock1
    layer_index = 2  # third layer of the first block
    growth = units[layer_index].module.conv2.out_channels
    c0 = block.denselayer1.norm1.num_features
    x = torch.randn(2, c0, 8, 8)
    lo = c0 + layer_index * growth
    with torch.no_grad(), gated(model, {layer_index: 0.0}):
        out = block(x)
    assert out[:, lo:lo + growth].abs().sum() == 0
    assert out[:, lo + growth:].abs().sum() > 0  # later layers still produce channels
    with torch.no_grad():
        assert block(x)[:, lo:lo + growth].abs().sum() > 0


def test_gates_as_sequence_and_length_check():
    model = _eval("resnet20")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), gated(model, [1.0] * 9):
        same = model(x)
    assert torch.equal(same, model(x).detach())
    with pytest.raises(ValueError), gated(model, [1.0] * 3):
        pass


def test_capture_branch_outputs_shapes():
    model = _eval("resnet20")
    with torch.no_grad(), capture_branch_outputs(model, [0, 8]) as store:
        model(torch.randn(5, 3, 32, 32))
    assert store[0][0].shape == (5, 16 * 32 * 32)
    assert store[8][0].shape == (5, 64 * 8 * 8)
