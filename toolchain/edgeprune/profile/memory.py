"""Memory: weight bytes per precision and peak activation memory.

The peak is found by walking the graph in execution order (ONNX nodes are stored topologically
sorted, the order a sequential runtime runs them): a tensor is allocated when its node runs and
freed after its last consumer has run; graph inputs live from the start and graph outputs to the
end. While a node runs, its inputs and outputs are live together, so the peak is measured at each
node with its outputs allocated. Runtimes that alias reshapes or reuse buffers in place can do
better; this is the plain, conservative count.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.profile.accounting import GraphAccount


@dataclass(frozen=True)
class PeakMemory:
    bytes: int
    node: str  # the node running when the peak is reached
    index: int


def peak_activation_memory(acc: GraphAccount) -> PeakMemory:
    """The largest total of live activation tensors over the execution, and where it happens."""
    n = len(acc.nodes)
    last_use: dict[str, int] = {}
    for i, inputs in enumerate(acc.node_inputs):
        for t in inputs:
            last_use[t] = i
    for t in acc.graph_outputs:
        last_use[t] = n
    live = {t: acc.tensor_bytes.get(t, 0) for t in acc.graph_inputs}
    best = PeakMemory(sum(live.values()), "input", -1)
    for i, outputs in enumerate(acc.node_outputs):
        for t in outputs:
            live[t] = acc.tensor_bytes.get(t, 0)
        total = sum(live.values())
        if total > best.bytes:
            best = PeakMemory(total, acc.nodes[i].name, i)
        # Free what no later node reads (outputs nobody reads die at once).
        for t in list(live):
            if last_use.get(t, -1) <= i:
                del live[t]
    return best


def weight_bytes_by_precision(acc: GraphAccount) -> dict[str, int]:
    """Weight bytes grouped by the precision of the node that owns them."""
    out: dict[str, int] = {}
    for node in acc.nodes:
        if node.weight_bytes:
            out[node.precision] = out.get(node.precision, 0) + node.weight_bytes
    return out
