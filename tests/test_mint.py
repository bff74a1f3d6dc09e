"""MINT: the GMI estimator, the percentile criterion, and exact physical channel removal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from edgeprune.checkpoint import load_model, save_checkpoint
from edgeprune.errors import EdgepruneError
from edgeprune.models import create_model
from edgeprune.prune import PruneConfig, prune_model
from edgeprune.prune.channels import channel_groups, masked, remove_channels
from edgeprune.prune.mint import (
    MintConfig,
    gmi_from_points,
    gmi_matrix,
    mst_cross_edges,
    select_filters,
)
from torch import nn


def test_gmi_hand_cases():
    # Two far-apart pairs: the MST joins the halves once, R = 1: 1 − 1·4/(2·2·2) = 0.5
    assert gmi_from_points(np.array([[0.0, 0], [1, 1]]), np.array([[10.0, 10], [11, 11]])) == 0.5
    # Interleaved on a line (0, 1, 2, 3 alternate halves): every edge crosses, R = 3: −0.5
    assert gmi_from_points(np.array([[0.0], [2.0]]), np.array([[1.0], [3.0]])) == -0.5


def test_batched_prim_counts_the_cross_edges_of_scipys_mst():
    from scipy.sparse.csgraph import minimum_spanning_tree

    rng = np.random.default_rng(0)
    z = rng.standard_normal((30, 3))
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    labels = np.arange(30) % 3 == 0
    tree = minimum_spanning_tree(d).tocoo()
    expected = int(sum(labels[i] != labels[j] for i, j in zip(tree.row, tree.col)))
    assert mst_cross_edges(d[None], labels)[0] == expected


def test_gmi_sees_dependency_between_filters():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 2, 2))              # two filters of layer l
    y = (x[:, :1] * 2 + 0.05 * rng.standard_normal((200, 1, 2)))  # next filter copies filter 0
    rho = gmi_matrix(x, y, seed=0)
    assert rho.shape == (2, 1)
    assert rho[0, 0] > 0.6 and abs(rho[1, 0]) < 0.2


def test_percentile_threshold_hand_case():
    rho = np.array([[0.9, 0.1], [0.05, 0.02], [0.3, 0.01]])
    # the 50th percentile of the six values is (0.05 + 0.1) / 2 = 0.075: filter 1's best (0.05)
    # falls below it, filters 0 and 2 reach it with one connection each
    assert select_filters(rho, 50) == [1]
    assert select_filters(rho, 90) == [1, 2]          # threshold 0.6
    assert select_filters(rho, 90, min_keep=2) == [1]  # the weakest goes first
    with pytest.raises(EdgepruneError, match="percentile"):
        MintConfig(percentile=120).validate()


def _random_bn(model: nn.Module) -> nn.Module:
    """BN statistics away from identity, so a wrong channel mapping shows in the outputs."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def _check_exact_removal(arch: str, side: int = 32):
    model = _random_bn(create_model(arch, num_classes=10))
    shape = (3, side, side)
    groups = channel_groups(model, shape)
    rng = np.random.default_rng(0)
    plan = {g.root: sorted(rng.choice(g.channels, g.channels // 3, replace=False).tolist())
            for g in groups}
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected = masked(model, plan, shape)(x)
        before = sum(p.numel() for p in model.parameters())
        remove_channels(model, plan, shape)
        got = model(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) < before
    return model, groups, plan


def test_exact_removal_zoo_resnet20_and_onnx_has_smaller_convs(tmp_path):
    from edgeprune.export import export_onnx
    from onnx import load, numpy_helper

    model, groups, _ = _check_exact_removal("resnet20")
    # option-A shortcuts pad channels: only the filters inside blocks are prunable there
    assert len(groups) == 9 and not any(g.residual for g in groups)
    export_onnx(model, (3, 32, 32), tmp_path / "m.onnx")
    graph = load(str(tmp_path / "m.onnx")).graph
    widths = {numpy_helper.to_array(i).shape[0] for i in graph.initializer if len(i.dims) == 4}
    assert 16 - 16 // 3 in widths and 64 - 64 // 3 in widths


def test_exact_removal_torchvision_resnet18_residual_streams():
    _, groups, _ = _check_exact_removal("resnet18")
    assert sum(g.residual for g in groups) == 4  # the four residual streams, additions coupled


@pytest.mark.slow
def test_exact_removal_densenet_concatenations():
    _, groups, _ = _check_exact_removal("densenet_bc100")
    # every dense layer's new channels, the stem's and the two transitions' outputs (48 + 3)
    assert sum(g.concat for g in groups) == 51


def test_channel_pruned_checkpoint_reloads_exactly(tmp_path, resnet20_digits):
    model = resnet20_digits.model
    remove_channels(model, {"layer2.1.conv1": [0, 3, 5], "layer3.0.conv1": [1]}, (1, 8, 8))
    resnet20_digits.info.channels_pruned = True
    save_checkpoint(tmp_path / "p.pt", model, resnet20_digits.info)
    back = load_model(tmp_path / "p.pt")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(back.model(x), model(x))
    assert back.model.layer2[1].conv1.out_channels == 29


def test_prune_mint_end_to_end(tmp_path, resnet20_digits, digits):
    from edgeprune.checkpoint import data_for_model

    ds = data_for_model(resnet20_digits, digits)
    cfg = PruneConfig(method="mint", mint_samples=48, mint_percentile=95, finetune_epochs=0)
    result = prune_model(resnet20_digits, ds, cfg, tmp_path)
    s = result.summary
    assert s["channels_removed"] > 0 and s["params_after"] < s["params_before"]
    doc = json.loads((tmp_path / "mspic.json").read_text())
    assert doc["mint"]["groups"] and doc["method"] == "mint"
    back = load_model(tmp_path / "pruned.pt")
    assert sum(p.numel() for p in back.model.parameters()) == sum(
        p.numel() for p in result.loaded.model.parameters())


@pytest.mark.slow
def test_prune_mspic_plus_mint_records_both_steps(tmp_path, resnet20_digits, digits):
    from edgeprune.checkpoint import data_for_model

    ds = data_for_model(resnet20_digits, digits)
    cfg = PruneConfig(method="mspic+mint", stages=1, max_error_increase=0.2, samples=200,
                      mint_samples=48, mint_percentile=95, finetune_epochs=0)
    result = prune_model(resnet20_digits, ds, cfg, tmp_path)
    doc = json.loads((tmp_path / "mspic.json").read_text())
    assert doc["stages"] and doc["stages"][0]["removed"]  # units removed first
    assert doc["mint"]["channels_removed"] > 0             # then filters
    back = load_model(tmp_path / "pruned.pt")
    assert back.info.removed_units == result.summary["removed_units"]
    assert back.info.channels_pruned
