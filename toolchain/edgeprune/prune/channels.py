"""Channel surgery: physically remove filters and everything that depends on them.

The coupling (a conv's output channels, its BN, the next convs' input channels, every layer on
both sides of a residual addition, the offsets of a concatenation) comes from Torch-Pruning's
``DependencyGraph`` (torch-pruning==1.6.1, pinned in pyproject.toml). We use it rather than our
own surgery because it traces any model through autograd and already handles additions,
concatenations, splits and flattening, with a test suite over hundreds of torchvision/timm models;
:mod:`edgeprune.surgery` only knows whole skip-units.

One exception it cannot see through: the CIFAR ResNets' option-A shortcut (:class:`PadShortcut`)
zero-pads channels with ``F.pad``, which the graph takes for an element-wise op. A group whose
channels reach such a shortcut is therefore never pruned (in those models: the residual streams;
the filters inside each block are).

A group is named by its root conv; its channels are what pruning removes. ``masked`` zeroes the
removed channels where they enter the next layers (the consumers' input weights), which is what
the pruned model computes in eval mode: :func:`remove_channels` is tested against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.errors import EdgepruneError


@dataclass
class ChannelGroup:
    """Coupled channels that are removed together, rooted at the conv ``root``."""

    root: str                       # qualified name of the conv whose output channels root it
    channels: int
    consumers: list[tuple[str, list[int]]]  # (Conv/Linear name, its input-channel indices)
    producers: list[str]            # convs whose output channels are in the group
    residual: bool                  # the channels pass through an addition
    concat: bool                    # ... or a concatenation


def _tp():
    import torch_pruning as tp

    return tp


def dependency_graph(model: nn.Module, input_shape) -> object:
    tp = _tp()
    example = torch.zeros(1, *input_shape)
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():  # the graph is traced through autograd
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    finally:
        model.train(was)


def channel_groups(model: nn.Module, input_shape, graph=None) -> list[ChannelGroup]:
    """Every prunable group of output channels, in module order of the root conv."""
    graph = graph or dependency_graph(model, input_shape)
    names = {m: n for n, m in model.named_modules()}
    classifier = _classifier(model)
    groups = []
    for g in graph.get_all_groups(ignored_layers=[classifier] if classifier else [],
                                  root_module_types=[nn.Conv2d]):
        group = _describe(g, names)
        if group is not None and not _reaches_pad_shortcut(model, group):
            groups.append(group)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(groups, key=lambda grp: order[grp.root])


def _classifier(model: nn.Module) -> nn.Module | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _describe(group, names: dict) -> ChannelGroup | None:
    tp = _tp()
    consumers, producers, residual, concat, root = [], [], False, False, None
    for dep, idxs in group:
        module, handler = dep.target.module, dep.handler
        kind = type(module).__name__
        if "AddBackward" in str(module):  # torch-pruning names element-wise ops by grad_fn
            residual = True
        if "Concat" in kind:
            concat = True
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or module not in names:
            continue
        if handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels):
            producers.append(names[module])
            root = root or names[module]
        elif handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
            consumers.append((names[module], [int(i) for i in idxs]))
    if root is None:
        return None
    first = group[0]
    return ChannelGroup(names.get(first.dep.target.module, root), len(first.idxs), consumers,
                        producers, residual, concat)


def _reaches_pad_shortcut(model: nn.Module, group: ChannelGroup) -> bool:
    """Channels of a residual stream in a model with option-A (zero-padding) shortcuts."""
    from edgeprune.models.resnet_cifar import PadShortcut

    has_pad = any(isinstance(m, PadShortcut) for m in model.modules())
    return has_pad and group.residual


def masked(model: nn.Module, plan: dict[str, list[int]], input_shape) -> nn.Module:
    """A copy of ``model`` with the planned channels zeroed where the next layers read them."""
    import copy

    out = copy.deepcopy(model)
    groups = {g.root: g for g in channel_groups(out, input_shape)}
    modules = dict(out.named_modules())
    with torch.no_grad():
        for root, removed in plan.items():
            for name, idxs in groups[root].consumers:
                cols = [idxs[i] for i in removed]
                modules[name].weight[:, cols] = 0
    return out


def remove_channels(model: nn.Module, plan: dict[str, list[int]], input_shape) -> nn.Module:
    """Remove, in place, the channels ``plan`` names ({root conv: channel positions in the
    group}) and every parameter that depends on them."""
    tp = _tp()
    graph = dependency_graph(model, input_shape)
    modules = dict(model.named_modules())
    known = {g.root: g for g in channel_groups(model, input_shape, graph)}
    for root, removed in plan.items():
        if root not in known:
            raise EdgepruneError(f"{root} roots no prunable channel group; choose one of: "
                                 f"{', '.join(known)}")
        if removed and len(removed) >= known[root].channels:
            raise EdgepruneError(f"cannot remove all {known[root].channels} channels of {root}")
    # Prune in reverse module order: a group's channel positions stay valid while later
    # groups (whose concatenation offsets depend on earlier widths) are untouched.
    for root in sorted(plan, key=lambda r: list(modules).index(r), reverse=True):
        if plan[root]:
            group = graph.get_pruning_group(modules[root], tp.prune_conv_out_channels,
                                            idxs=sorted(plan[root]))
            group.prune()
    return model


# ---------------------------------------------------------------- storing the result


def fit_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Shrink Conv2d/BatchNorm/Linear modules to the shapes ``state`` holds (a channel-pruned
    checkpoint stores its widths in its tensors, so no other record is needed)."""
    for name, m in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if key not in state or not hasattr(m, "weight") or m.weight is None:
            continue
        shape = tuple(state[key].shape)
        if tuple(m.weight.shape) == shape:
            continue
        _resize(m, shape)
    return model


def _resize(m: nn.Module, shape: tuple[int, ...]) -> None:
    if isinstance(m, nn.Conv2d):
        m.out_channels, m.in_channels = shape[0], shape[1] * m.groups
        if m.bias is not None:
            m.bias = nn.Parameter(torch.empty(shape[0]))
    elif isinstance(m, nn.Linear):
        m.out_features, m.in_features = shape
        if m.bias is not None:
            m.bias = nn.Parameter(torch.empty(shape[0]))
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.num_features = shape[0]
        m.bias = nn.Parameter(torch.empty(shape[0]))
        m.register_buffer("running_mean", torch.zeros(shape[0]))
        m.register_buffer("running_var", torch.ones(shape[0]))
    else:
        raise EdgepruneError(f"cannot resize a {type(m).__name__} to {shape}")
    m.weight = nn.Parameter(torch.empty(shape))
