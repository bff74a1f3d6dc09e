"""torchvision's ImageNet architectures by name, randomly initialised (no weight downloads).

Two ways in: the registered zoo names (``resnet18`` …, kept for existing checkpoints) and
``tv:NAME`` for any torchvision classification builder (``tv:mobilenet_v2``), whose skip-units are
found on the traced graph. Both keep torchvision's stems; ``in_channels`` other than 3 replaces
the first conv.
"""

from __future__ import annotations

import torchvision
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models import register_model

TV_PREFIX = "tv:"


def tv_builders() -> list[str]:
    """torchvision's classification builders (not detection, segmentation or video)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def create_tv(name: str, *, num_classes: int, in_channels: int,
              image_size: int | None = None) -> nn.Module:
    """``tv:NAME`` built with ``weights=None``; vision transformers take ``image_size``."""
    builder = name[len(TV_PREFIX):]
    if builder not in tv_builders():
        raise EdgepruneError(f"unknown torchvision architecture {name!r}; `edgeprune models` "
                             "lists the tv: names (e.g. tv:mobilenet_v2)")
    kwargs = {"weights": None, "num_classes": num_classes}
    if builder.startswith("vit_") and image_size:
        kwargs["image_size"] = image_size  # ViT's position embedding is sized for one input
    if builder in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)  # one logits tensor, no warning
    model = torchvision.models.get_model(builder, **kwargs)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Any builder's stem takes other channel counts by swapping its first conv."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            parent, _, key = name.rpartition(".")
            new = nn.Conv2d(in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                            m.dilation, m.groups, bias=m.bias is not None)
            setattr(model.get_submodule(parent) if parent else model, key, new)
            return


def _tv(name: str, *, num_classes: int, in_channels: int) -> nn.Module:
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        if name.startswith("resnet"):
            old = model.conv1
            model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                                    old.padding, bias=False)
        else:
            old = model.features.conv0
            model.features.conv0 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size,
                                             old.stride, old.padding, bias=False)
    return model


@register_model
def resnet18(**kw) -> nn.Module:
    return _tv("resnet18", **kw)


@register_model
def resnet34(**kw) -> nn.Module:
    return _tv("resnet34", **kw)


@register_model
def resnet50(**kw) -> nn.Module:
    return _tv("resnet50", **kw)


@register_model
def densenet121(**kw) -> nn.Module:
    return _tv("densenet121", **kw)
