"""Gates and feature capture on the graph: a node after each chosen unit's branch output T_l.

The gate node multiplies T_l by α before the addition (or concatenation) reads it, so α = 0
computes exactly the shortcut (or the concatenation with zeros in the unit's channels). The
nodes are inserted for the duration of a ``with`` block and taken out after it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import fx, nn

from edgeprune.graphunits.discover import GraphUnit, list_units


class _Gate(nn.Module):
    """α · T_l, and a copy of T_l (flattened per sample) when recording."""

    def __init__(self, alpha: float = 1.0, store: list | None = None) -> None:
        super().__init__()
        self.alpha, self.store = alpha, store

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.store is not None:
            self.store.append(x.detach().flatten(1).to("cpu", torch.float32).clone())
        return x if self.alpha == 1.0 else x * self.alpha


@contextmanager
def _instrumented(gm: fx.GraphModule, gates: dict[int, _Gate]) -> Iterator[None]:
    units = list_units(gm)
    by_name = {n.name: n for n in gm.graph.nodes}
    inserted = []
    for i, gate in gates.items():
        out = by_name[units[i].output]
        key = f"edgeprune_gate_{i}"
        gm.add_submodule(key, gate)
        with gm.graph.inserting_after(out):
            node = gm.graph.call_module(key, (out,))
        out.replace_all_uses_with(node, delete_user_cb=lambda u, g=node: u is not g)
        inserted.append((key, node, out))
    gm.recompile()
    try:
        yield
    finally:
        for key, node, out in inserted:
            node.replace_all_uses_with(out)
            gm.graph.erase_node(node)
            gm.delete_submodule(key)
        gm.recompile()


def _as_mapping(alphas, units: list[GraphUnit]) -> Mapping[int, float]:
    if isinstance(alphas, Mapping):
        return alphas
    if len(alphas) != len(units):
        raise ValueError(f"{len(alphas)} gates given for {len(units)} units")
    return dict(enumerate(alphas))


@contextmanager
def gated(gm: fx.GraphModule,
          alphas: Mapping[int, float] | Sequence[float]) -> Iterator[fx.GraphModule]:
    """Within the block, unit ``i`` computes with gate ``alphas[i]`` (1 where not given);
    ``alphas`` is one α per unit, or a mapping from unit index to α."""
    alphas = _as_mapping(alphas, list_units(gm))
    gates = {i: _Gate(float(a)) for i, a in alphas.items() if float(a) != 1.0}
    with _instrumented(gm, gates):
        yield gm


@contextmanager
def capture_branch_outputs(gm: fx.GraphModule,
                           indices: Sequence[int] | None = None) -> Iterator[dict[int, list]]:
    """Record T_l, flattened per sample, for the chosen units on every forward pass: a dict
    ``index -> list of (batch, dim) float32 CPU tensors``, as :mod:`edgeprune.units` yields."""
    chosen = range(len(list_units(gm))) if indices is None else indices
    store: dict[int, list] = {i: [] for i in chosen}
    with _instrumented(gm, {i: _Gate(store=store[i]) for i in chosen}):
        yield store
