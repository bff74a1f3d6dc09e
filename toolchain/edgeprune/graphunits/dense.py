"""The ``concat`` rule: a layer whose new channels join the features it read (DenseNet).

A node is a unit when every reader concatenates it along channels with (at least) the
features its branch was computed from, so the concatenation grows. Gated, its channels are
zeros; removed, every consumer loses exactly those channels. Channels are followed from each
concatenation through BN (sliced), elementwise activations, pooling and flattening of 1×1 maps,
and further concatenations, to the linear maps that read them (conv in-channels or linear
in-features, sliced). A zeroed channel is a constant after BN (+ ReLU), and what that constant
adds through the linear map is folded, as :mod:`edgeprune.surgery` does: into the linear map's
bias, or else forward into the running means of the BNs that read it (through pooling and
concatenation), or as a last resort into a new bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn import functional as F

from edgeprune.graphunits._graph import (
    exclusive,
    module_calls,
    mutates_outside,
    node_arg,
    outside_inputs,
    owned_params,
)
from edgeprune.graphunits.discover import GraphUnit, Match, register_unit_rule
from edgeprune.graphunits.trace import shape
from edgeprune.units import DENSE

CAT_FUNCTIONS: set = {torch.cat, torch.concat, torch.concatenate}
# Ops that map a per-channel constant to a per-channel constant (their value is computed).
ELEMENTWISE_MODULES: tuple = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish,
                              nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Mish)
ELEMENTWISE_FUNCTIONS: set = {F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish,
                              torch.sigmoid, torch.tanh}
# Ops that pass channels (and a constant) through unchanged.
PASS_MODULES: tuple = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
                       nn.AdaptiveMaxPool2d)
PASS_FUNCTIONS: set = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.max_pool2d}
ELEMENTWISE_METHODS: set[str] = {"relu", "sigmoid", "tanh"}
FLATTEN_METHODS: set[str] = {"flatten", "view", "reshape"}


UNKNOWN = torch.ones(())  # discovery: a constant whose value is not computed, maybe nonzero


@dataclass
class Edit:
    """One change to a module: ``slice_bn``/``slice_in`` drop channels ``index``;
    ``fold_mean`` subtracts ``delta`` from running means at ``index``; ``fold_bias`` adds
    ``delta`` to a bias (``add_bias`` creates it)."""

    op: str
    target: str
    node: str
    index: torch.Tensor
    delta: torch.Tensor | None = None


def _cat_inputs(node: fx.Node) -> list | None:
    if node.op != "call_function" or node.target not in CAT_FUNCTIONS:
        return None
    tensors, dim, out = node_arg(node, 0, "tensors"), node_arg(node, 1, "dim", 0), shape(node)
    if not isinstance(tensors, (list, tuple)) or out is None or dim % len(out) != 1:
        return None
    return list(tensors)


def _channel_offset(cat: fx.Node, src: fx.Node) -> int | None:
    inputs = _cat_inputs(cat)
    if inputs is None or inputs.count(src) != 1:
        return None
    return sum(shape(x)[1] for x in inputs[: inputs.index(src)])


class _Planner:
    """Follows dropped channels to the linear maps that read them, collecting edits."""

    def __init__(self, gm: fx.GraphModule, ctx: dict, values: bool) -> None:
        self.gm, self.values, self.edits, self.seen = gm, values, [], set()
        self.calls, self.modules = ctx["calls"], ctx["modules"]

    def _module(self, n: fx.Node, types) -> nn.Module | None:
        if n.op != "call_module" or self.calls[n.target] != 1:
            return None
        m = self.modules[n.target]
        return m if isinstance(m, types) else None

    def drop(self, node: fx.Node, gone: torch.Tensor, const: torch.Tensor | None) -> bool:
        """Readers of ``node`` lose channels ``gone``, whose gated value is ``const`` per
        channel (None: zero)."""
        for u in node.users:
            if u in self.seen:
                return False  # two paths to one reader: its edits would be applied twice
            self.seen.add(u)
            if not self._drop_into(node, u, gone, const):
                return False
        return True

    def _drop_into(self, src, u, gone, const) -> bool:
        if (bn := self._module(u, nn.modules.batchnorm._BatchNorm)) is not None:
            if bn.running_mean is None:
                return False  # batch statistics even in eval: no constant to fold
            self.edits.append(Edit("slice_bn", u.target, u.name, gone))
            return self.drop(u, gone, _bn_of(bn, gone, const) if self.values else UNKNOWN)
        if (lin := self._module(u, (nn.Conv2d, nn.Linear))) is not None:
            return self._linear(u, lin, gone, const)
        if (step := _passes(self.modules, src, u)) is not None:
            return self.drop(u, gone + step, const)
        if not _is_elementwise(self.modules, u):
            return False
        if const is None and _keeps_zero(self.modules, u):
            return self.drop(u, gone, None)
        return self.drop(u, gone, _elementwise(self.modules, u, gone, const)
                         if self.values else UNKNOWN)

    def _linear(self, u: fx.Node, lin: nn.Module, gone, const) -> bool:
        """Slice the map's inputs; a nonzero constant on them is folded (acceptance depends on
        the graph alone, never on the values, so that discovery need not compute them)."""
        if isinstance(lin, nn.Conv2d) and lin.groups != 1:
            return False
        self.edits.append(Edit("slice_in", u.target, u.name, gone))
        if const is None:
            return True
        if isinstance(lin, nn.Conv2d) and any(p != 0 for p in _padding(lin)):
            return False  # a constant input is not constant at a padded border
        delta = None
        if self.values:
            w = lin.weight.detach()[:, gone]
            delta = w.reshape(w.shape[0], len(gone), -1).sum(-1) @ const
        if lin.bias is not None:
            self.edits.append(Edit("fold_bias", u.target, u.name, gone, delta))
            return True
        folds = _Folder(self)
        if folds.fold(u, torch.arange(lin.weight.shape[0]), delta):
            self.edits.extend(folds.edits)
        else:
            self.edits.append(Edit("add_bias", u.target, u.name, gone, delta))
        return True


class _Folder:
    """Carries a per-channel constant ``delta`` that a linear map's output lost forward to the
    BN running means (or biases) that can absorb it."""

    def __init__(self, planner: _Planner) -> None:
        self.p, self.edits, self.seen = planner, [], set()

    def fold(self, node: fx.Node, index: torch.Tensor, delta: torch.Tensor) -> bool:
        if not node.users:
            return False
        for u in node.users:
            if u in self.seen or u.op == "output":
                return False
            self.seen.add(u)
            if not self._into(node, u, index, delta):
                return False
        return True

    def _into(self, src, u, index, delta) -> bool:
        if self.p._module(u, nn.modules.batchnorm._BatchNorm) is not None:
            self.edits.append(Edit("fold_mean", u.target, u.name, index, delta))
            return True
        if (step := _passes(self.p.modules, src, u)) is not None:
            return self.fold(u, index + step, delta)
        return False


def _passes(modules: dict, src: fx.Node, u: fx.Node) -> int | None:
    """Channel shift through ``u`` when it passes channels (and their constants) unchanged:
    the offset for a concatenation, 0 for pooling, dropout and flattening of 1×1 maps."""
    if (cat := _channel_offset(u, src)) is not None:
        return cat
    if u.op == "call_module" and isinstance(modules[u.target], PASS_MODULES):
        return 0
    if u.op == "call_module" and isinstance(m := modules[u.target], nn.AvgPool2d):
        return 0 if _padding(m) == (0, 0) or not m.count_include_pad else None
    if u.op == "call_function" and u.target in PASS_FUNCTIONS:
        return 0
    if _flattens(modules, u):
        s_in, s_out = shape(src), shape(u)
        flat = s_in and s_out and len(s_out) == 2 and all(d == 1 for d in s_in[2:])
        return 0 if flat and s_out[1] == s_in[1] else None
    return None


def _flattens(modules: dict, u: fx.Node) -> bool:
    if u.op == "call_module":
        return isinstance(modules[u.target], nn.Flatten)
    return ((u.op == "call_function" and u.target is torch.flatten)
            or (u.op == "call_method" and u.target in FLATTEN_METHODS))


def _padding(m: nn.Module) -> tuple:
    p = m.padding
    return tuple(p) if isinstance(p, (tuple, list)) else (p, p)


def _bn_of(bn: nn.Module, gone: torch.Tensor, const: torch.Tensor | None) -> torch.Tensor:
    """BN (eval) of the per-channel constant on channels ``gone``."""
    x = torch.zeros(len(gone)) if const is None else const
    mean, var = bn.running_mean[gone], bn.running_var[gone]
    y = (x - mean) / torch.sqrt(var + bn.eps)
    if bn.affine:
        y = y * bn.weight.detach()[gone] + bn.bias.detach()[gone]
    return y


def _is_elementwise(modules: dict, u: fx.Node) -> bool:
    return ((u.op == "call_module" and isinstance(modules[u.target], ELEMENTWISE_MODULES))
            or (u.op == "call_function" and u.target in ELEMENTWISE_FUNCTIONS)
            or (u.op == "call_method" and u.target in ELEMENTWISE_METHODS))


def _keeps_zero(modules: dict, u: fx.Node) -> bool:
    """f(0) = 0: zeroed channels stay zero, with nothing to fold."""
    if u.op == "call_module":
        return not isinstance(modules[u.target], (nn.Sigmoid, nn.Hardsigmoid))
    return u.target not in (torch.sigmoid, "sigmoid")


@torch.no_grad()
def _elementwise(modules: dict, u: fx.Node, gone, const) -> torch.Tensor:
    x = torch.zeros(len(gone)) if const is None else const.clone()
    if u.op == "call_module":
        return modules[u.target](x)
    if u.op == "call_function":
        return u.target(x, *u.args[1:], **u.kwargs)
    return getattr(x, u.target)()


def _plan(gm: fx.GraphModule, node: fx.Node, ctx: dict, values: bool) -> list[Edit] | None:
    """The edits that take ``node``'s channels out of every reader (None: not possible);
    with ``values``, the constants to fold are computed too."""
    planner = _Planner(gm, ctx, values)
    for cat in node.users:
        lo = _channel_offset(cat, node)
        if not planner.drop(cat, torch.arange(lo, lo + shape(node)[1]), None):
            return None
    return planner.edits


class ConcatRule:
    name = "concat"

    def match(self, gm: fx.GraphModule, node: fx.Node, ctx: dict) -> Match | None:
        readers = list(node.users)
        if not readers or any(_channel_offset(u, node) is None for u in readers):
            return None
        branch = exclusive(node, ctx["order"])
        fork = outside_inputs(branch)
        if not fork or any(not fork <= set(_cat_inputs(u)) for u in readers):
            return None  # the layer does not read what it is concatenated with: no growth
        if owned_params(gm, branch, ctx["params"]) == 0 or mutates_outside(gm, branch):
            return None
        ctx.setdefault("calls", module_calls(gm))
        ctx.setdefault("modules", dict(gm.named_modules()))
        edits = _plan(gm, node, ctx, values=False)
        return None if edits is None else Match(DENSE, node, node, branch, plan=edits)

    def remove(self, gm: fx.GraphModule, unit: GraphUnit) -> None:
        node, m = unit.match.output, unit.match
        ctx = {"calls": module_calls(gm), "modules": dict(gm.named_modules())}
        edits = sorted(_plan(gm, node, ctx, values=True),
                       key=lambda e: e.op.startswith("slice"))  # folds index the old channels
        for e in edits:
            _apply(gm, e)
        for cat in list(node.users):
            kept = [x for x in _cat_inputs(cat) if x is not node]
            if cat.args:
                cat.args = (kept, *cat.args[1:])
            else:
                cat.kwargs = {**cat.kwargs, "tensors": kept}
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        for n in sorted(m.branch, key=order.__getitem__, reverse=True):
            gm.graph.erase_node(n)

    def extra_cost(self, gm, unit, node_macs) -> tuple[int, int]:
        params = macs = 0
        for e in unit.match.plan:
            mod = gm.get_submodule(e.target)
            if e.op == "slice_bn" and mod.affine:
                params += 2 * len(e.index)
            elif e.op == "slice_in":
                params += mod.weight[:, e.index].numel()
                macs += node_macs.get(e.node, 0) * len(e.index) // mod.weight.shape[1]
            elif e.op == "add_bias":
                params -= mod.weight.shape[0]  # the new bias
        return params, macs


@torch.no_grad()
def _apply(gm: fx.GraphModule, e: Edit) -> None:
    mod = gm.get_submodule(e.target)
    if e.op == "fold_mean":
        mod.running_mean[e.index] -= e.delta  # BN(z + Δ) = BN with mean − Δ
    elif e.op == "fold_bias":
        mod.bias.add_(e.delta)
    elif e.op == "add_bias":
        mod.bias = nn.Parameter(e.delta.clone())
    elif e.op == "slice_bn":
        keep = _keep(mod.num_features, e.index)
        if mod.affine:
            mod.weight = nn.Parameter(mod.weight.detach()[keep].clone())
            mod.bias = nn.Parameter(mod.bias.detach()[keep].clone())
        mod.running_mean = mod.running_mean[keep].clone()
        mod.running_var = mod.running_var[keep].clone()
        mod.num_features = len(keep)
    elif e.op == "slice_in":
        keep = _keep(mod.weight.shape[1], e.index)
        mod.weight = nn.Parameter(mod.weight.detach()[:, keep].clone())
        if isinstance(mod, nn.Conv2d):
            mod.in_channels = len(keep)
        else:
            mod.in_features = len(keep)


def _keep(n: int, gone: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[gone] = False
    return mask.nonzero().flatten()


register_unit_rule(ConcatRule())
