"""What removing each unit saves in *estimated latency on a target* (``--objective latency``).

The model at the start of a stage is exported once (``edgeprune.export.export_onnx``: the graph
the build profiles), accounted per node (:mod:`edgeprune.profile.accounting`) and estimated per
node with the target's roofline (:mod:`edgeprune.profile.latency`), exactly as ``edgeprune
profile`` estimates a model. Each ONNX node is then attributed to the unit whose module owns it:
the TorchScript exporter names a node by its module scope (``/layer1/layer1.0/conv1/Conv``), so a
node belongs to the unit whose module is, or contains, that scope, except a projection unit's
shortcut (``downsample``), which stays. A traced model (:mod:`edgeprune.graphunits`) exports
nodes named by their leaf attribute alone (``/a_1/Conv``), which names no unit: there every
unit's latency is its MACs at the model's mean latency per MAC, which ranks policies as
``--objective macs`` does (``attributed`` is False).

A unit's latency is the sum over the nodes it owns (``owned``), plus, for a unit whose removal
also takes input channels from its consumers (a dense layer), those MACs at the model's mean
latency per MAC (``extra``). The owned parts and the nodes no unit owns add up to the model's
estimate exactly; a policy's saving is the sum over its units, as for params and MACs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from edgeprune.units import PROJECTION, is_graph


@dataclass(frozen=True)
class UnitLatency:
    """Estimated latency (ms, batch 1) of the model and what each unit's removal saves."""

    total_ms: float
    owned_ms: list[float]        # per unit: its own nodes
    extra_ms: list[float]        # per unit: its consumers' lost input channels (dense units)
    unowned_ms: float            # nodes no unit owns (stem, head, shortcuts, transitions)
    target: str
    precision: str
    attributed: bool = True      # False: a traced model, every unit estimated from its MACs

    @property
    def units_ms(self) -> list[float]:
        return [a + b for a, b in zip(self.owned_ms, self.extra_ms)]


def unit_latency(model: nn.Module, input_shape: tuple[int, ...], units, target,
                 precision: str = "fp32", unit_macs: list[int] | None = None) -> UnitLatency:
    """Per-unit estimated latency on ``target`` (a :class:`edgeprune.targets.Target`) of the
    units ``units`` of ``model``. ``unit_macs`` (``complexity.unit_complexity``'s MACs, in the
    order of ``units``) adds the consumer MACs a unit's removal saves beyond its own nodes."""
    import onnx

    from edgeprune.export import export_onnx
    from edgeprune.profile.accounting import account
    from edgeprune.profile.latency import estimate_latency_ms

    with tempfile.TemporaryDirectory(prefix="edgeprune-latency-") as tmp:
        path = Path(tmp) / "stage.onnx"
        export_onnx(model, tuple(input_shape), path)
        acc = account(onnx.load(str(path)), precision)
    total, per_node = estimate_latency_ms(acc.nodes, target)
    scopes = [node_scope(n.name) for n in acc.nodes]
    attributed = not is_graph(model)
    owners = [({u.name}, {f"{u.name}.downsample"} if u.kind == PROJECTION else set())
              for u in units] if attributed else []
    owned = [0.0] * len(units)
    owned_macs = [0] * len(units)
    unowned = 0.0
    for node, scope, ms in zip(acc.nodes, scopes, per_node):
        i = _owner(scope, owners)
        if i is None:
            unowned += ms
        else:
            owned[i] += ms
            owned_macs[i] += node.macs
    mac_ms = [ms for n, ms in zip(acc.nodes, per_node) if n.macs]
    per_mac = sum(mac_ms) / max(1, sum(n.macs for n in acc.nodes if n.macs))
    extra = [max(0, int(m) - o) * per_mac if unit_macs is not None else 0.0
             for m, o in zip(unit_macs or [0] * len(units), owned_macs)]
    return UnitLatency(float(total), owned, extra, unowned, target.name, precision, attributed)


def node_scope(node_name: str) -> str:
    """The qualified module name an exported node comes from ('' for the root):
    ``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``. A container's child appears as
    ``parent.child`` (``layer1.0``, ``downsample.0``) and replaces the parent's segment."""
    parts: list[str] = []
    for p in [p for p in node_name.split("/") if p][:-1]:
        if parts and p.startswith(parts[-1] + "."):
            parts[-1] = p
        else:
            parts.append(p)
    return ".".join(parts)


def _under(scope: str, names: set[str]) -> bool:
    return any(scope == n or scope.startswith(n + ".") for n in names)


def _owner(scope: str, owners: list[tuple[set[str], set[str]]]) -> int | None:
    for i, (own, kept) in enumerate(owners):
        if _under(scope, own) and not _under(scope, kept):
            return i
    return None
