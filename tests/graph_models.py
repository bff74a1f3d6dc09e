"""Architectures for the graph-units tests and benchmark: torchvision builders, the zoo, and two
hand-written models that come from no library (a residual-bottleneck CNN and a small ViT).

Every model is built with a seed and randomised so that a wrong removal shows: BN running
statistics and affine terms, layer scales (ConvNeXt starts them at 1e-6, which would hide a
branch), and zero-initialised heads (torchvision's ViT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- hand-written models


class SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 with SE and a layer scale in the branch; a pooled 1×1 projection when the
    shape changes; merged with ``torch.add`` or ``+`` and a ReLU after the merge."""

    def __init__(self, cin: int, cout: int, stride: int = 1, use_torch_add: bool = False):
        super().__init__()
        mid = cout // 4
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.se = SqueezeExcite(cout)
        self.gamma = nn.Parameter(torch.full((cout, 1, 1), 0.5))
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                                       nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.use_torch_add = use_torch_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.gamma * self.se(self.bn3(self.conv3(y)))
        s = x if self.short is None else self.short(x)
        return F.relu(torch.add(s, y) if self.use_torch_add else y + s)


class BottleneckNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU())
        self.stage1 = nn.Sequential(Bottleneck(32, 64), Bottleneck(64, 64, use_torch_add=True))
        self.stage2 = nn.Sequential(Bottleneck(64, 128, 2), Bottleneck(128, 128))
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(x.mean((2, 3)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ls1 = nn.Parameter(torch.full((dim,), 0.7))
        self.drop_path = nn.Dropout(0.1)  # stands in for DropPath: identity in eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TinyViT(nn.Module):
    def __init__(self, num_classes: int = 10, dim: int = 32, depth: int = 3, patch: int = 4,
                 size: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.1)
        self.blocks = nn.Sequential(*[ViTBlock(dim, 4) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


# ---------------------------------------------------------------- the list


@dataclass(frozen=True)
class Arch:
    name: str
    size: int        # input height = width
    units: int       # skip-units the graph must find
    remove: tuple    # unit indices removed in the test (an identity and a projection/dense)
    slow: bool = False


ARCHS = [
    Arch("resnet18", 32, 8, (1, 2)),
    Arch("mobilenet_v2", 32, 10, (0, 9)),
    Arch("mobilenet_v3_small", 32, 6, (0, 5)),
    Arch("efficientnet_b0", 32, 9, (0, 8)),
    Arch("regnet_x_400mf", 32, 22, (0, 2)),
    Arch("tiny_vit", 32, 6, (2, 5)),
    Arch("bottleneck_net", 32, 4, (1, 2)),
    Arch("zoo:resnet20", 16, 9, (3, 4)),
    Arch("zoo:densenet_bc100", 16, 48, (15, 47)),
    Arch("resnext50_32x4d", 32, 16, (0, 4), slow=True),
    Arch("wide_resnet50_2", 32, 16, (1, 7), slow=True),
    Arch("convnext_tiny", 32, 18, (0, 17), slow=True),
    Arch("densenet121", 32, 58, (5, 57), slow=True),
    Arch("vit_b_16", 32, 24, (0, 23), slow=True),
]


def build(name: str, size: int) -> nn.Module:
    """A seeded, randomised model of architecture ``name`` in eval mode (10 classes)."""
    import torchvision

    torch.manual_seed(0)
    if name.startswith("zoo:"):
        from edgeprune.models import create_model

        model = create_model(name[4:], num_classes=10)
    elif name == "tiny_vit":
        model = TinyViT(size=size)
    elif name == "bottleneck_net":
        model = BottleneckNet()
    elif name == "vit_b_16":
        model = torchvision.models.vit_b_16(weights=None, num_classes=10, image_size=size)
    else:
        model = getattr(torchvision.models, name)(weights=None, num_classes=10)
    return randomise(model)


@torch.no_grad()
def randomise(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.rand(n, generator=g) - 0.5)
        if isinstance(m, nn.Linear) and not m.weight.any():  # torchvision ViT: zero head
            m.weight.normal_(0, 0.05, generator=g)
        if isinstance(getattr(m, "layer_scale", None), nn.Parameter):  # ConvNeXt: 1e-6
            m.layer_scale.copy_(torch.rand(m.layer_scale.shape, generator=g) + 0.5)
    return model.eval()
