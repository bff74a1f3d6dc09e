"""DenseNet-BC-100 for CIFAR (Huang et al., 2017): growth 12, three blocks of 16 bottleneck
layers, compression 0.5.

Built on torchvision's DenseNet so that the built-in and torchvision DenseNets share one
skip-unit interface and one surgery; only the ImageNet stem (7×7 stride-2 conv, BN, ReLU,
max-pool) is replaced by the CIFAR stem (a 3×3 conv to 2k channels).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.densenet import DenseNet

from edgeprune.models import register_model


def _cifar_densenet(growth: int, depth: int, *, num_classes: int, in_channels: int) -> DenseNet:
    layers_per_block = (depth - 4) // 6  # bottleneck layers: two convs each
    model = DenseNet(growth_rate=growth, block_config=(layers_per_block,) * 3,
                     num_init_features=2 * growth, bn_size=4, drop_rate=0.0,
                     num_classes=num_classes)
    feats = model.features
    feats.conv0 = nn.Conv2d(in_channels, 2 * growth, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(feats.conv0.weight)
    # Keep the attribute names (so state-dict keys look like torchvision's) but drop the ops.
    feats.norm0, feats.relu0, feats.pool0 = nn.Identity(), nn.Identity(), nn.Identity()
    return model


@register_model
def densenet_bc100(**kw) -> nn.Module:
    return _cifar_densenet(12, 100, **kw)
