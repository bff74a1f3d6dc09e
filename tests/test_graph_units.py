"""Skip-units on traced graphs of any model: discovery, gates, removal, costs, ONNX export.

Parametrized over the architectures in graph_models.ARCHS (light ones by default, heavy ones
marked slow). Each removal must compute exactly what the gated model computes in eval mode, drop
exactly the predicted parameters and MACs, leave no removed weight in the module, and export to
an ONNX graph with fewer nodes that ONNX Runtime agrees with.
"""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F
from edgeprune import units as module_units
from edgeprune.complexity import model_complexity
from edgeprune.errors import EdgepruneError
from edgeprune.export import export_onnx
from edgeprune.graphunits import (
    capture_branch_outputs,
    gated,
    list_units,
    remove_units,
    trace,
    unit_complexity,
)
from edgeprune.units import DENSE, IDENTITY, PROJECTION
from graph_models import ARCHS, build, randomise
from torch import nn


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these are many tiny kernels, and on a busy machine more threads
    spin against each other (a 32×32 RegNet forward: 0.05 s on one, 2.4 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PARAMS = [pytest.param(a, id=a.name, marks=[pytest.mark.slow] if a.slow else [])
          for a in ARCHS]


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    scale = max(1.0, float(expected.abs().max()))  # untrained deep nets reach large logits
    return bool((got - expected).abs().max() <= 1e-5 * scale)


def _removed_modules(gm, unit) -> set[str]:
    """Module names the unit's branch calls that no other node calls: they must disappear."""
    inside = {n.target for n in unit.match.branch if n.op == "call_module"}
    outside = {n.target for n in gm.graph.nodes
               if n.op == "call_module" and n not in unit.match.branch}
    return inside - outside


@pytest.mark.parametrize("arch", PARAMS)
def test_removed_equals_gated_costs_drop_exactly_and_onnx_shrinks(arch, tmp_path):
    shape = (3, arch.size, arch.size)
    model = build(arch.name, arch.size)
    gm, untouched = trace(model, shape), trace(model, shape)
    units = list_units(gm)
    print(f"{arch.name}: {len(units)} units")
    assert len(units) == arch.units
    names = [units[i].name for i in arch.remove]
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = gm(x)
        with gated(gm, dict.fromkeys(arch.remove, 0.0)):
            expected = gm(x)
        assert torch.equal(gm(x), full)  # the gates are gone again
    assert not _close(full, expected)  # the units matter, so the comparison below can fail

    before = model_complexity(gm, shape)
    saved_params = saved_macs = 0
    gone: set[str] = set()
    for name in names:  # one at a time: each unit's cost on the model it is removed from
        unit = next(u for u in list_units(gm) if u.name == name)
        cost = unit_complexity(gm, [unit])[0]
        saved_params, saved_macs = saved_params + cost.params, saved_macs + cost.macs
        gone |= _removed_modules(gm, unit)
        remove_units(gm, [name])
    after = model_complexity(gm, shape)
    with torch.no_grad():
        got = gm(x)
    assert _close(got, expected)
    assert before.params - after.params == saved_params > 0
    assert before.macs - after.macs == saved_macs >= 0
    assert sum(p.numel() for p in gm.state_dict().values()) < sum(
        p.numel() for p in untouched.state_dict().values())
    held = dict(gm.named_modules())
    assert gone and not gone & set(held)
    left = [u.name for u in list_units(gm)]
    assert len(left) == arch.units - len(names) and not set(names) & set(left)

    if arch.slow and arch.name in ("densenet121", "wide_resnet50_2", "vit_b_16"):
        return  # the ONNX half of these is the same code path at 10× the export time
    full_onnx = export_onnx(untouched, shape, tmp_path / "full.onnx", simplify=False)
    pruned_onnx = export_onnx(gm, shape, tmp_path / "pruned.onnx", simplify=False)
    assert pruned_onnx.nodes < full_onnx.nodes
    assert onnx.load(str(tmp_path / "pruned.onnx")).graph.node  # parity was checked by export


@pytest.mark.parametrize("arch", ["resnet20", "densenet_bc100", "resnet164"])
def test_zoo_graph_units_are_the_module_units(arch):
    model = build(f"zoo:{arch}", 16)
    got = [(u.name, u.kind, u.stage) for u in list_units(trace(model, (3, 16, 16)))]
    want = [(u.name, u.kind, u.stage) for u in module_units.list_units(model)]
    assert got == want


def test_removal_replays_on_a_fresh_trace_and_names_stay():
    model = build("tiny_vit", 32)
    gm = trace(model, (3, 32, 32))
    names = [u.name for u in list_units(gm)]
    assert names[:2] == ["blocks.0.attn", "blocks.0.mlp"]  # two units in one block
    remove_units(gm, ["blocks.0.attn", "blocks.2.mlp"])
    assert [u.name for u in list_units(gm)] == [n for n in names
                                                if n not in ("blocks.0.attn", "blocks.2.mlp")]
    again = remove_units(trace(model, (3, 32, 32)), ["blocks.0.attn", "blocks.2.mlp"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), gm(x))
    assert set(again.state_dict()) == set(gm.state_dict())


def test_kinds_identity_projection_dense():
    kinds = [u.kind for u in list_units(trace(build("bottleneck_net", 32), (3, 32, 32)))]
    assert kinds == [PROJECTION, IDENTITY, PROJECTION, IDENTITY]
    dense = list_units(trace(build("zoo:densenet_bc100", 16), (3, 16, 16)))
    assert {u.kind for u in dense} == {DENSE}


def test_gates_and_capture_on_the_graph():
    model = build("mobilenet_v2", 32)
    gm = trace(model, (3, 32, 32))
    nodes = len(gm.graph.nodes)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad(), capture_branch_outputs(gm, [0, 9]) as store:
        gm(x)
    assert store[0][0].shape == (3, 24 * 8 * 8) and store[9][0].shape == (3, 160 * 1 * 1)
    with torch.no_grad(), gated(gm, [1.0] * 10):
        assert torch.equal(gm(x), model(x))
    with pytest.raises(ValueError), gated(gm, [1.0] * 3):
        pass
    assert len(gm.graph.nodes) == nodes and not any("gate" in n for n, _ in gm.named_modules())


# ---------------------------------------------------------------- what is not a unit


class NotUnits(nn.Module):
    """Additions and concatenations that are no skip-units: a bias-like parameter, a
    parameter-free branch, Inception-style parallel branches, a branch whose first op writes
    into the fork in place, and one real unit."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 8, 1, 1))
        self.a, self.b = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 3, padding=1)
        self.inplace = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1))
        self.real = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos
        x = x + F.relu(x)
        x = torch.cat([self.a(x), self.b(x)], 1)
        x = self.inplace(x) + x
        return x + self.real(x)


def test_only_real_units_are_found():
    units = list_units(trace(NotUnits(), (8, 6, 6)))
    assert [(u.name, u.kind) for u in units] == [("real", IDENTITY)]


class Outer(nn.Module):
    """A residual whose branch holds two residual blocks: three units, nested."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = (nn.Conv2d(4, 4, 3, padding=1) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.c1(x)
        y = y + self.c2(y)
        return x + self.c3(y)


def test_nested_units_and_removing_the_outer_one():
    gm = trace(Outer(), (4, 6, 6))
    assert len(list_units(gm)) == 3
    outer = list_units(gm)[2]
    assert {n.target for n in outer.match.branch if n.op == "call_module"} == {"c1", "c2", "c3"}
    x = torch.randn(2, 4, 6, 6)
    remove_units(gm, [outer.name])
    assert torch.equal(gm(x), x) and list_units(gm) == [] and not list(gm.parameters())


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: FX cannot trace it
            return self.conv(x)
        return x


def test_untraceable_model_is_a_user_error():
    with pytest.raises(EdgepruneError, match=r"torch.fx cannot trace.*torch.export.*--method none"):
        trace(Untraceable(), (3, 8, 8))


def test_unknown_unit_is_a_user_error():
    gm = trace(build("zoo:resnet20", 16), (3, 16, 16))
    remove_units(gm, ["layer1.1"])
    with pytest.raises(EdgepruneError, match="layer1.1"):
        remove_units(gm, ["layer1.1"])


def test_branch_holds_stochastic_depth_squeeze_excitation_and_layer_scale():
    unit = list_units(trace(build("efficientnet_b0", 32), (3, 32, 32)))[0]
    held = {n.target for n in unit.match.branch if n.op == "call_module"}
    assert {"features.2.1.stochastic_depth", "features.2.1.block.2.fc1"} <= held
    unit = list_units(trace(build("bottleneck_net", 32), (3, 32, 32)))[0]
    fetched = {n.target for n in unit.match.branch if n.op == "get_attr"}
    assert fetched == {"stage1.0.gamma"}
    assert "stage1.0.short.1" in {n.target for n in unit.match.shortcut if n.op == "call_module"}


class GrowingNet(nn.Module):
    """Two dense layers read by 1×1 convs whose constant cannot go into a BN: one conv has a
    bias (folded there), the other has none and a ReLU after it (a bias is created). A third
    reader through a padded 3×3 conv makes its layer no unit: a constant is not constant at a
    zero-padded border."""

    def __init__(self, padded: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
        self.layer2 = nn.Sequential(nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 4, 1))
        self.bn = nn.BatchNorm2d(16)
        self.read = nn.Conv2d(16, 6, 3 if padded else 1, padding=1 if padded else 0, bias=False)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([x, self.layer1(x)], 1)
        x = torch.cat([x, self.layer2(x)], 1)
        return self.head(F.relu(self.read(F.relu(self.bn(x)))).mean((2, 3)))


@pytest.mark.parametrize("first", [True, False])
def test_dense_constants_fold_into_a_bias_or_a_new_one(first):
    model = randomise(GrowingNet())
    gm = trace(model, (3, 8, 8))
    units = list_units(gm)
    assert [u.kind for u in units] == [DENSE, DENSE]
    unit = units[0 if first else 1]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), gated(gm, {unit.index: 0.0}):
        expected = gm(x)
    before, cost = model_complexity(gm, (3, 8, 8)), unit_complexity(gm, [unit])[0]
    remove_units(gm, [unit.name])
    after = model_complexity(gm, (3, 8, 8))
    with torch.no_grad():
        assert _close(gm(x), expected) and not _close(model(x), expected)
    assert before.params - after.params == cost.params
    assert before.macs - after.macs == cost.macs > 0
    assert gm.read.bias is not None and gm.read.bias.shape == (6,)  # created for the constant


def test_padded_reader_is_no_dense_unit():
    assert list_units(trace(randomise(GrowingNet(padded=True)), (3, 8, 8))) == []
