"""Physical removal: exactly the gated model, exactly the units' cost, and a replayable file."""

import onnx
import pytest
import torch
from edgeprune.checkpoint import ModelInfo, load_model, save_checkpoint
from edgeprune.complexity import model_complexity, unit_complexity
from edgeprune.errors import EdgepruneError
from edgeprune.export import export_onnx
from edgeprune.models import create_model
from edgeprune.surgery import ShortcutOnly, remove_units
from edgeprune.units import DENSE, IDENTITY, PROJECTION, gated, list_units, unit_kind

SHAPE = (3, 32, 32)


def _random_stats(model):
    """Non-trivial BN statistics and affine terms, so that a wrong fold or slice shows."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


CASES = [  # small inputs keep it fast; 32×32 where the ImageNet stems need it
    ("resnet20", [0, 3, 4, 6, 8], 32),      # identity + both option-A projections
    ("resnet164", [0, 18, 53], 16),         # pre-activation: conv projection, no post ReLU
    ("densenet_bc100", [0, 15, 16, 47], 16),  # dense: in a block, before a transition, last
    ("resnet18", [0, 2, 4], 32),            # torchvision BasicBlock, conv projection
    ("resnet50", [0, 3, 4], 32),            # torchvision Bottleneck
    ("densenet121", [5, 6, 57], 32),        # torchvision DenseNet: transition and norm5
]


@pytest.mark.parametrize("arch,indices,size", CASES, ids=[c[0] for c in CASES])
def test_removed_equals_gated_and_costs_drop_exactly(arch, indices, size):
    SHAPE = (3, size, size)
    torch.manual_seed(0)
    model = _random_stats(create_model(arch))
    units = list_units(model)
    names = [units[i].name for i in indices]
    kinds = {units[i].kind for i in indices}
    x = torch.randn(2, *SHAPE)
    with torch.no_grad(), gated(model, dict.fromkeys(indices, 0.0)):
        expected = model(x)
    before = model_complexity(model, SHAPE)
    saved_params = saved_macs = 0
    for name in names:  # one at a time: each unit's cost on the model it is removed from
        unit = next(u for u in list_units(model) if u.name == name)
        cost = unit_complexity(model, SHAPE, [unit])[0]
        saved_params, saved_macs = saved_params + cost.params, saved_macs + cost.macs
        remove_units(model, [name])
    after = model_complexity(model, SHAPE)
    with torch.no_grad():
        got = model(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert before.params - after.params == saved_params > 0
    assert before.macs - after.macs == saved_macs > 0
    left = [u.name for u in list_units(model)]
    assert len(left) == len(units) - len(indices) and not set(names) & set(left)
    # Names are stable and the removals replay on a fresh model of the architecture.
    fresh = remove_units(create_model(arch), names)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), got)
    assert kinds <= {IDENTITY, PROJECTION, DENSE}


def test_projection_becomes_its_shortcut_and_stages_stay():
    model = create_model("resnet20")
    remove_units(model, ["layer2.0", "layer2.1", "layer2.2"])
    assert isinstance(model.layer2._modules["0"], ShortcutOnly)
    assert unit_kind(model.layer2._modules["0"]) is None
    assert list(model.layer2._modules) == ["0"]
    assert [u.stage for u in list_units(model)] == [0, 0, 0, 2, 2, 2]
    assert model(torch.randn(1, *SHAPE)).shape == (1, 10)


def test_unknown_or_removed_unit_is_a_user_error():
    model = create_model("resnet20")
    remove_units(model, ["layer1.1"])
    with pytest.raises(EdgepruneError, match="layer1.1"):
        remove_units(model, ["layer1.1"])
    with pytest.raises(EdgepruneError, match="not a skip-unit"):
        remove_units(model, ["layer1.0.conv1"])


def _conv_nodes(path) -> int:
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def test_pruned_checkpoint_loads_alone_and_exports_fewer_convs(tmp_path):
    torch.manual_seed(0)
    model = _random_stats(create_model("resnet20"))
    info = ModelInfo("resnet20", 10, SHAPE)
    save_checkpoint(tmp_path / "full.pt", model, info)
    names = ["layer1.1", "layer2.0", "layer3.2"]
    remove_units(model, names)
    info.removed_units = names
    save_checkpoint(tmp_path / "pruned.pt", model, info)
    loaded = load_model(tmp_path / "pruned.pt")
    assert loaded.info.removed_units == names
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert (tmp_path / "pruned.pt").stat().st_size < (tmp_path / "full.pt").stat().st_size
    full = export_onnx(load_model(tmp_path / "full.pt").model, SHAPE, tmp_path / "full.onnx")
    pruned = export_onnx(loaded.model, SHAPE, tmp_path / "pruned.onnx")
    assert pruned.nodes < full.nodes
    assert _conv_nodes(tmp_path / "full.onnx") - _conv_nodes(tmp_path / "pruned.onnx") == 6
