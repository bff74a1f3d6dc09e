"""Small queries on a torch.fx graph shared by the unit rules."""

from __future__ import annotations

import operator

import torch
from torch import fx, nn


def ancestors(node: fx.Node) -> set[fx.Node]:
    """Every node ``node`` depends on (not itself)."""
    seen: set[fx.Node] = set()
    stack = list(node.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


def exclusive(out: fx.Node, order: dict[fx.Node, int]) -> set[fx.Node]:
    """``out`` and every node whose values reach the rest of the graph only through ``out``:
    exactly what disappears when ``out`` is no longer used. Placeholders never belong."""
    owned = {out}
    for n in sorted(ancestors(out), key=order.__getitem__, reverse=True):
        # Reverse topological order: a node's users are decided before the node.
        if n.op != "placeholder" and n.users and all(u in owned for u in n.users):
            owned.add(n)
    return owned


def outside_inputs(nodes: set[fx.Node]) -> set[fx.Node]:
    """Tensors the node set reads from outside itself (parameters fetched by get_attr excluded):
    where a branch forks off the rest of the graph."""
    return {m for n in nodes for m in n.all_input_nodes if m not in nodes and m.op != "get_attr"}


_INPLACE_FUNCTIONS = {operator.iadd, operator.imul, operator.isub, operator.itruediv}


def mutates_outside(gm: fx.GraphModule, nodes: set[fx.Node]) -> bool:
    """Whether a node of the set writes in place into a tensor from outside it: removing such a
    node would change what the rest of the graph reads."""
    for n in nodes:
        first = n.args[0] if n.args else None
        if isinstance(first, fx.Node) and first not in nodes and _inplace(gm, n):
            return True
    return False


def _inplace(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return bool(getattr(gm.get_submodule(n.target), "inplace", False))
    if n.op == "call_method":
        return n.target.endswith("_") and not n.target.startswith("__")
    if n.op == "call_function":
        return n.target in _INPLACE_FUNCTIONS or bool(n.kwargs.get("inplace", False))
    return False


def tensors_of(gm: fx.GraphModule, nodes) -> dict[int, torch.Tensor]:
    """Parameters the nodes hold (call_module: the module's; get_attr: the fetched one), by id."""
    out: dict[int, torch.Tensor] = {}
    for n in nodes:
        if n.op == "call_module":
            out.update((id(p), p) for p in gm.get_submodule(n.target).parameters())
        elif n.op == "get_attr":
            obj = _fetch(gm, n.target)
            if isinstance(obj, nn.Parameter):
                out[id(obj)] = obj
            elif isinstance(obj, nn.Module):
                out.update((id(p), p) for p in obj.parameters())
    return out


def _fetch(gm: fx.GraphModule, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class ParamIndex:
    """Which nodes hold which parameters, built once per graph so that a unit's own parameters
    are a lookup, not a walk over the whole model."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.held: dict[fx.Node, dict[int, int]] = {}
        self.holders: dict[int, int] = {}
        for n in gm.graph.nodes:
            if n.op in ("call_module", "get_attr"):
                ids = {i: p.numel() for i, p in tensors_of(gm, [n]).items()}
                self.held[n] = ids
                for i in ids:
                    self.holders[i] = self.holders.get(i, 0) + 1

    def owned(self, nodes: set[fx.Node]) -> int:
        """Parameters that leave the model with ``nodes``: theirs, less those others share."""
        sizes = {i: size for n in nodes for i, size in self.held.get(n, {}).items()}
        return sum(sizes[i] for i in self.owned_ids(nodes))

    def owned_ids(self, nodes: set[fx.Node]) -> set[int]:
        """The ids of the tensors that leave the model with ``nodes`` (held by no other node)."""
        count: dict[int, int] = {}
        for n in nodes:
            for i in self.held.get(n, {}):
                count[i] = count.get(i, 0) + 1
        return {i for i, c in count.items() if c == self.holders[i]}


def owned_params(gm: fx.GraphModule, nodes: set[fx.Node], index: ParamIndex | None = None) -> int:
    """Parameters that leave the model with ``nodes``: theirs, less those other nodes share."""
    return (index or ParamIndex(gm)).owned(nodes)


def module_calls(gm: fx.GraphModule) -> dict[str, int]:
    """How many call_module nodes call each module (a module called twice cannot be sliced for
    one of its uses)."""
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    return calls


def module_path(node: fx.Node) -> list[str]:
    """The qualified names of the modules whose forward created ``node``, outermost first."""
    stack = node.meta.get("nn_module_stack") or {}
    return [v[0] if isinstance(v, tuple) else str(v) for v in stack.values()]


def node_arg(node: fx.Node, index: int, name: str, default=None):
    """Argument ``index`` (positional) or ``name`` (keyword) of a call."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def cleanup(gm: fx.GraphModule) -> None:
    """Drop dead nodes, then every submodule, parameter and buffer no node uses any more, so
    that removed weights are gone from the module and its state dict."""
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    called = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    fetched = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, module in list(gm.named_modules()):
        if any(name == c or name.startswith(c + ".") for c in called):
            continue  # a called module uses all it holds
        prefix = f"{name}." if name else ""
        for key in [*module._parameters, *module._buffers]:
            if prefix + key not in fetched:
                delattr(module, key)
