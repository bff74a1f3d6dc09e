"""The 45 nm energy model: the 12.8 W anchor, precision ratios, SRAM vs DRAM, binary MACs."""

from __future__ import annotations

import tomllib

import onnx
import pytest
import torch
from edgeprune.export import export_onnx
from edgeprune.paths import targets_dir
from edgeprune.profile import NodeCost, account
from edgeprune.profile.energy import energy_summary, load_energy_table, node_energy
from torch import nn

TABLE = tomllib.loads((targets_dir() / "energy" / "45nm.toml").read_text())


def test_table_holds_horowitz_values_and_states_the_binary_assumption():
    ops = TABLE["ops_pj"]
    assert (ops["int8_add"], ops["int8_mult"], ops["fp16_add"], ops["fp16_mult"],
            ops["fp32_add"], ops["fp32_mult"], ops["int32_add"], ops["int32_mult"]) == \
        (0.03, 0.2, 0.4, 1.1, 0.9, 3.7, 0.1, 3.1)
    assert TABLE["memory_pj"]["dram_read_32bit"] == 640 and \
        TABLE["memory_pj"]["sram_read_32bit"] == 5
    text = (targets_dir() / "energy" / "45nm.toml").read_text()
    assert "ASSUMPTION" in text and "XNOR" in text
    assert load_energy_table().mac_pj("binary", binary_activations=True) == \
        TABLE["binary"]["xnor_popcount_mac_pj"]


def test_a_billion_connections_at_20_fps_spend_12_8_watts_on_dram():
    # The seeds' anchor: 10^9 fp32 weights, each read once from DRAM per frame, at 20 frames/s:
    # 10^9 × 20 × 640 pJ = 12.8 W.
    layer = NodeCost("fc", "Gemm", [1, 1], "fp32", params=10**9, weight_bytes=4 * 10**9)
    totals, _ = energy_summary([layer], load_energy_table(), on_chip_bytes=0, fps=20)
    assert totals["energy_mj"]["weights_dram"] == 640.0
    assert totals["power_w"]["weights_dram"] == 12.8
    assert totals["power_w"]["fps"] == 20


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8 * 8 * 8, 10, bias=False)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@pytest.fixture(scope="module")
def net_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("energy") / "net.onnx"
    export_onnx(Net(), (4, 8, 8), path)
    return onnx.load(str(path))


def test_int8_costs_less_than_its_fp32_twin_by_the_table_ratios(net_onnx):
    table = load_energy_table()
    ops = TABLE["ops_pj"]
    e32, _ = energy_summary(account(net_onnx, "fp32").nodes, table, on_chip_bytes=0)
    e8, _ = energy_summary(account(net_onnx, "int8").nodes, table, on_chip_bytes=0)
    e32, e8 = e32["energy_mj"], e8["energy_mj"]
    mac_ratio = (ops["int8_mult"] + ops["int8_add"]) / (ops["fp32_mult"] + ops["fp32_add"])
    assert e8["compute"] / e32["compute"] == pytest.approx(mac_ratio, rel=1e-12)
    assert e8["weights_dram"] / e32["weights_dram"] == pytest.approx(8 / 32, rel=1e-12)
    assert e8["activations"] / e32["activations"] == pytest.approx(8 / 32, rel=1e-12)
    assert e8["total"] < e32["total"]
    macs = account(net_onnx, "fp32").macs
    assert e32["compute"] == pytest.approx(macs * (ops["fp32_mult"] + ops["fp32_add"]) * 1e-9)


def test_activations_cost_sram_when_they_fit_on_chip_and_dram_when_not():
    node = NodeCost("conv", "Conv", [1, 8, 8, 8], "fp32", macs=0, reads=[1024], writes=[2048])
    table = load_energy_table()
    sram = node_energy(node, table, on_chip_bytes=4096).activations_pj
    dram = node_energy(node, table, on_chip_bytes=0).activations_pj
    mixed = node_energy(node, table, on_chip_bytes=1024).activations_pj
    assert sram == pytest.approx(3072 / 4 * 5) and dram == pytest.approx(3072 / 4 * 640)
    assert mixed == pytest.approx(1024 / 4 * 5 + 2048 / 4 * 640)


def test_xnor_popcount_macs_cost_the_stated_assumption():
    table = load_energy_table()
    xnor = NodeCost("c", "Conv", [1, 1], "binary", macs=1000, binary_activations=True)
    assert node_energy(xnor, table, 0).compute_pj == pytest.approx(
        1000 * TABLE["binary"]["xnor_popcount_mac_pj"])
    assert node_energy(xnor, table, 0).compute_pj < node_energy(
        NodeCost("c", "Conv", [1, 1], "int8", macs=1000), table, 0).compute_pj
