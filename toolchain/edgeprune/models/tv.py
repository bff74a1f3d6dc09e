"""torchvision's ImageNet architectures by name, randomly initialised (no weight downloads).

They keep torchvision's stems; ``in_channels`` other than 3 replaces the first conv.
"""

from __future__ import annotations

import torchvision
from torch import nn

from edgeprune.models import register_model


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
