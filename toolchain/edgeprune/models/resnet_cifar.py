"""CIFAR-style ResNets (He et al., 2016): ResNet-20/32/56/110 and pre-activation ResNet-164.

Blocks reuse torchvision's ``BasicBlock`` (conv-BN-ReLU-conv-BN, add, ReLU), so the built-in and
torchvision ResNets share one skip-unit interface and one surgery. Width and stride changes use the
parameter-free "option A" shortcut of the CIFAR paper (subsample, zero-pad channels), which gives
the paper's 0.27 M parameters for ResNet-20.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from edgeprune.models import register_model

# ---------------------------------------------------------------- helpers


class PadShortcut(nn.Module):
    """Option-A shortcut: take every ``stride``-th pixel and zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


# ---------------------------------------------------------------- blocks


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (He et al., 2016b): BN-ReLU-conv1x1, BN-ReLU-conv3x3,
    BN-ReLU-conv1x1, added to the shortcut with no activation after the merge."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


# ---------------------------------------------------------------- model


class CifarResNet(nn.Module):
    """3×3 stem, three stages of widths 16/32/64 (×4 for bottlenecks), global pool, classifier.

    Attribute names follow torchvision's ResNet (conv1, bn1, layer1..3, fc) so that
    code written for one works for the other.
    """

    def __init__(self, block: type[nn.Module], depth_per_stage: int, *, num_classes: int,
                 in_channels: int = 3, preact: bool = False) -> None:
        super().__init__()
        self.inplanes = 16
        self.preact = preact
        self.conv1 = _conv3x3(in_channels, 16)
        # Pre-activation nets normalise inside the blocks, and once more before the pool.
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(block, 16, depth_per_stage, 1)
        self.layer2 = self._make_stage(block, 32, depth_per_stage, 2)
        self.layer3 = self._make_stage(block, 64, depth_per_stage, 2)
        out_ch = 64 * getattr(block, "expansion", 1)
        self.final_bn = nn.BatchNorm2d(out_ch) if preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out_ch, num_classes)
        _init_weights(self)

    def _make_stage(self, block: type[nn.Module], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        expansion = getattr(block, "expansion", 1)
        layers = []
        for i in range(blocks):
            s = stride if i == 0 else 1
            downsample = None
            if s != 1 or self.inplanes != planes * expansion:
                if block is BasicBlock:
                    downsample = PadShortcut(self.inplanes, planes, s)
                else:
                    downsample = nn.Sequential(
                        nn.Conv2d(self.inplanes, planes * expansion, 1, stride=s, bias=False),
                        nn.BatchNorm2d(planes * expansion),
                    )
            layers.append(block(self.inplanes, planes, s, downsample))
            self.inplanes = planes * expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.preact:
            x = self.relu(self.final_bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------- builders


def _basic(depth: int, **kw) -> CifarResNet:
    return CifarResNet(BasicBlock, (depth - 2) // 6, **kw)


@register_model
def resnet20(**kw) -> nn.Module:
    return _basic(20, **kw)


@register_model
def resnet32(**kw) -> nn.Module:
    return _basic(32, **kw)


@register_model
def resnet56(**kw) -> nn.Module:
    return _basic(56, **kw)


@register_model
def resnet110(**kw) -> nn.Module:
    return _basic(110, **kw)


@register_model
def resnet164(**kw) -> nn.Module:
    return CifarResNet(PreActBottleneck, (164 - 2) // 9, preact=True, **kw)
