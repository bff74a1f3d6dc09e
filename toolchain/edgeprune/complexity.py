"""Parameters and multiply-accumulates (MACs), counted from the module graph.

MACs come from one forward pass with hooks on the layers that multiply: Conv2d
(output elements × in_channels/groups × kernel area) and Linear (in × out per row). BatchNorm,
activations, pooling and additions are not MACs, which is the usual convention (ResNet-56 at
32×32: ≈125 M MACs). A unit's count is what removing it takes away: the whole block for an
identity unit, the residual branch alone (not the kept shortcut) for a projection unit, and for a
dense layer the layer plus the input channels its consumers lose (see :mod:`edgeprune.surgery`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.units import DENSE, PROJECTION, SkipUnit, is_graph, list_units


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int


def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs of every Conv2d and Linear, by qualified name, for one sample of ``input_shape``
    (C, H, W). A torch.export program's are counted on its ATen convolutions and linear maps."""
    from edgeprune.pt2 import is_exported

    if is_exported(model):
        from edgeprune.pt2 import layer_macs as program_macs

        return program_macs(model, input_shape)
    macs: dict[str, int] = {}

    def make(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            per_sample = output.numel() // output.shape[0]
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                macs[name] = macs.get(name, 0) + per_sample * (
                    module.in_channels // module.groups) * kh * kw
            else:
                macs[name] = macs.get(name, 0) + per_sample * module.in_features
        return hook

    handles = [m.register_forward_hook(make(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs


def model_complexity(model: nn.Module, input_shape: tuple[int, ...]) -> Complexity:
    return Complexity(sum(p.numel() for p in model.parameters()),
                      sum(layer_macs(model, input_shape).values()))


def unit_complexity(model: nn.Module, input_shape: tuple[int, ...],
                    units: list[SkipUnit] | None = None) -> list[Complexity]:
    """What removing each unit would save, in the order of ``units`` (default: all)."""
    if is_graph(model):
        from edgeprune import graphunits

        return graphunits.unit_complexity(model, units)
    units = list_units(model) if units is None else units
    macs = layer_macs(model, input_shape)
    out = []
    for u in units:
        kept = f"{u.name}.downsample" if u.kind == PROJECTION else None
        params = sum(p.numel() for n, p in u.module.named_parameters()
                     if not (kept and f"{u.name}.{n}".startswith(kept + ".")))
        unit_macs = sum(v for n, v in macs.items() if n.startswith(u.name + ".")
                        and not (kept and n.startswith(kept + ".")))
        if u.kind == DENSE:
            from edgeprune.surgery import dense_consumer_savings

            more_params, more_macs = dense_consumer_savings(model, u.name, macs)
            params, unit_macs = params + more_params, unit_macs + more_macs
        out.append(Complexity(params, unit_macs))
    return out
