"""Architectures by name: ``create_model("resnet20", num_classes=10)``.

A registry in the manner of timm: builders register themselves with ``@register_model`` and
``list_models`` accepts shell-style wildcards. Every model exposes its skip-units through
:mod:`edgeprune.units`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from edgeprune.errors import EdgepruneError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    _load_builders()
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def list_architectures() -> list[str]:
    """Every name ``create_model`` takes: the zoo, then ``tv:`` + torchvision's builders."""
    from edgeprune.models.tv import TV_PREFIX, tv_builders

    return list_models() + [TV_PREFIX + b for b in tv_builders()]


def create_model(name: str, *, num_classes: int = 10, in_channels: int = 3,
                 image_size: int | None = None) -> nn.Module:
    """Build a fresh, randomly initialised model of architecture ``name`` (``image_size``
    matters only to builders sized for one input, such as ``tv:vit_b_16``)."""
    _load_builders()
    from edgeprune.models.tv import TV_PREFIX, create_tv

    if name.startswith(TV_PREFIX):
        model = create_tv(name, num_classes=num_classes, in_channels=in_channels,
                          image_size=image_size)
        model.edgeprune_arch = name
        return model
    if name not in _REGISTRY:
        raise EdgepruneError(
            f"unknown architecture {name!r}; choose one of: {', '.join(list_models())}, or "
            "tv:NAME for a torchvision builder (`edgeprune models` lists them)"
        )
    from edgeprune.units import mark_stages

    model = _REGISTRY[name](num_classes=num_classes, in_channels=in_channels)
    model.edgeprune_arch = name
    return mark_stages(model)


def _load_builders() -> None:
    # Importing the modules runs their @register_model decorators.
    from edgeprune.models import densenet_cifar, resnet_cifar, tv  # noqa: F401
