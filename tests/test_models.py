"""Every registered architecture builds, runs, and the CIFAR nets have the published sizes."""

import pytest
import torch
from edgeprune.complexity import model_complexity, unit_complexity
from edgeprune.errors import EdgepruneError
from edgeprune.models import create_model, list_models
from edgeprune.units import list_units


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_units(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert len(list_units(model)) > 0


def test_one_channel_input():
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


# Hand-computed: ResNet-20 has 3 stages × 3 basic blocks; stage widths 16/32/64.
def _resnet_params(n: int, classes: int = 10) -> int:
    stem = 3 * 16 * 9 + 2 * 16
    total = stem
    cin = 16
    for w in (16, 32, 64):
        for _i in range(n):
            total += cin * w * 9 + w * w * 9 + 4 * w  # two convs, two BNs (weight+bias)
            cin = w
    return total + 64 * classes + classes


@pytest.mark.parametrize("name,n,published_params", [("resnet20", 3, 0.27e6),
                                                      ("resnet56", 9, 0.85e6)])
def test_resnet_params_match_hand_count(name, n, published_params):
    c = model_complexity(create_model(name), (3, 32, 32))
    assert c.params == _resnet_params(n)
    assert abs(c.params - published_params) / published_params < 0.02


def test_resnet56_macs_about_125m():
    macs = model_complexity(create_model("resnet56"), (3, 32, 32)).macs
    assert abs(macs - 125e6) / 125e6 < 0.02
    # Exact hand count: stem + 9 blocks × 2 convs per stage at 32², 16², 8², + fc.
    hand = 32 * 32 * 16 * 27 + 640
    for w, hw, cin0 in ((16, 32, 16), (32, 16, 16), (64, 8, 32)):
        hand += hw * hw * w * 9 * (cin0 + w) + 16 * hw * hw * w * 9 * w
    assert macs == hand


def test_densenet_bc100_and_resnet164_sizes():
    densenet = model_complexity(create_model("densenet_bc100"), (3, 32, 32))
    assert abs(densenet.params - 0.8e6) < 0.05e6
    assert abs(model_complexity(create_model("resnet164"), (3, 32, 32)).params - 1.7e6) < 0.05e6


def test_unit_counts_per_architecture():
    counts = {n: len(list_units(create_model(n))) for n in
              ("resnet20", "resnet56", "resnet110", "resnet164", "densenet_bc100", "resnet18",
               "resnet50", "densenet121")}
    assert counts == {"resnet20": 9, "resnet56": 27, "resnet110": 54, "resnet164": 54,
                      "densenet_bc100": 48, "resnet18": 8, "resnet50": 16, "densenet121": 58}


def test_unit_complexity_sums_to_the_blocks():
    model = create_model("resnet20")
    sizes = unit_complexity(model, (3, 32, 32))
    # identity block of stage 1: two 3×3 convs 16->16 at 32×32
    assert sizes[1].macs == 2 * 32 * 32 * 16 * 16 * 9
    assert sizes[1].params == 2 * 16 * 16 * 9 + 4 * 16


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(EdgepruneError, match="unknown architecture 'resnet21'"):
        create_model("resnet21")
