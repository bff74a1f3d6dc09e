"""Estimated energy per inference from a process-node table (45 nm, Horowitz ISSCC 2014).

    compute   = Σ MACs × (mult + add at the node's precision) + Σ elements × (add)
    weights   = every weight read once from DRAM per inference, at its bit width
                (640 pJ per 32 bits, scaled linearly)
    activations = every activation tensor read and written once: 8 KB-SRAM cost (5 pJ / 32 bit)
                when the tensor fits the target's on-chip budget, DRAM (640 pJ / 32 bit) when not

Binary nodes: an XNOR + popcount MAC (binary weights and activations) and a binary-weight MAC
with real activations are costed as stated in targets/energy/45nm.toml, since the table has no
1-bit entry. Power at a frame rate is energy per inference × fps.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from math import prod

from edgeprune.errors import EdgepruneError
from edgeprune.paths import targets_dir
from edgeprune.profile.accounting import NodeCost

DEFAULT_FPS = 30.0  # frame rate at which reports state power (a common camera rate)
PJ_PER_MJ = 1e9


@dataclass(frozen=True)
class EnergyTable:
    name: str
    ops_pj: dict[str, float]
    memory_pj: dict[str, float]
    binary: dict[str, float]

    def mac_pj(self, precision: str, binary_activations: bool = False) -> float:
        if precision == "binary":
            key = "xnor_popcount_mac_pj" if binary_activations else "binary_weight_mac_pj"
            return self.binary[key]
        return self.ops_pj[f"{precision}_mult"] + self.ops_pj[f"{precision}_add"]

    def add_pj(self, precision: str) -> float:
        return self.ops_pj[f"{'fp32' if precision == 'binary' else precision}_add"]

    def per_byte_pj(self, level: str) -> float:
        return self.memory_pj[f"{level}_read_32bit"] / 4


@cache
def load_energy_table(name: str = "45nm") -> EnergyTable:
    path = targets_dir() / "energy" / f"{name}.toml"
    if not path.is_file():
        raise EdgepruneError(f"no energy table {name!r} at {path}; add it or fix the target's "
                             "[energy] table")
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    return EnergyTable(raw.get("name", name), raw["ops_pj"], raw["memory_pj"], raw["binary"])


@dataclass(frozen=True)
class NodeEnergy:
    compute_pj: float
    weights_pj: float
    activations_pj: float

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.weights_pj + self.activations_pj


def node_energy(node: NodeCost, table: EnergyTable, on_chip_bytes: int) -> NodeEnergy:
    """The energy of one node; a tensor of ``on_chip_bytes`` or less stays in SRAM."""
    compute = node.macs * table.mac_pj(node.precision, node.binary_activations)
    if node.precision == "binary" and not node.binary_activations and node.macs:
        # one scale multiply per output element of a binary-weight layer
        compute += prod(node.output_shape or [0]) * table.ops_pj["fp32_mult"]
    compute += node.elements * table.add_pj(node.precision)
    weights = node.weight_bytes * table.per_byte_pj("dram")
    acts = sum(b * table.per_byte_pj("sram" if b <= on_chip_bytes else "dram")
               for b in node.reads + node.writes)
    return NodeEnergy(compute, weights, acts)


def energy_summary(nodes: list[NodeCost], table: EnergyTable, on_chip_bytes: int,
                   fps: float = DEFAULT_FPS) -> tuple[dict, list[dict]]:
    """Totals in mJ per inference and in W at ``fps``, and the per-node rows in mJ."""
    per_node = [node_energy(n, table, on_chip_bytes) for n in nodes]
    rows = [{"compute": e.compute_pj / PJ_PER_MJ, "weights_dram": e.weights_pj / PJ_PER_MJ,
             "activations": e.activations_pj / PJ_PER_MJ, "total": e.total_pj / PJ_PER_MJ}
            for e in per_node]
    totals = {k: sum(r[k] for r in rows) for k in ("compute", "weights_dram", "activations",
                                                    "total")}
    totals["table"] = table.name
    power = {k: totals[k] * fps / 1000 for k in ("compute", "weights_dram", "activations",
                                                  "total")}
    power["fps"] = fps
    return {"energy_mj": totals, "power_w": power}, rows
