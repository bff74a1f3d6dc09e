"""Tracing for the units stage: any ``nn.Module`` becomes a torch.fx ``GraphModule`` with shapes.

The trace works on a deep copy, because surgery edits modules in place and the caller's model
must stay whole. Modules listed as leaves stay single ``call_module`` nodes: stochastic depth (so
that its training flag is read at run time, not frozen into the graph) and whatever a user
registers with :func:`register_leaf`.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from edgeprune.errors import EdgepruneError, first_line

_LEAVES: list[type[nn.Module]] = []


def register_leaf(cls: type[nn.Module]) -> type[nn.Module]:
    """Keep modules of ``cls`` as one node (not traced into); usable as a class decorator."""
    _LEAVES.append(cls)
    return cls


def _default_leaves() -> None:
    if not _LEAVES:
        from torchvision.ops import StochasticDepth

        _LEAVES.append(StochasticDepth)


class _UnitTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, tuple(_LEAVES)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, input_shape: tuple[int, ...]) -> fx.GraphModule:
    """A traced copy of ``model`` for inputs of one sample's ``input_shape`` (C, H, W).

    Nodes carry their shapes (``meta["tensor_meta"]``) and unit names are fixed here, so that
    they stay the same while units are removed and replay on a fresh trace.
    """
    _default_leaves()
    model = copy.deepcopy(model)
    try:
        graph = _UnitTracer().trace(model)
    except Exception as e:  # FX raises many types (TraceError, TypeError, RuntimeError …)
        raise EdgepruneError(
            f"torch.fx cannot trace this model ({type(e).__name__}: {first_line(e)}), so its "
            "skip-units cannot be found; make its forward traceable (no Python control flow on "
            "tensor values), or skip pruning: save it with torch.export (a .pt2 archive, which "
            "needs no Python class) and run with `--method none`") from None
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    gm.graph.eliminate_dead_code()  # unused tuple items (``x, _ = attn(...)``) would pin forks
    gm.recompile()
    gm.train(model.training)
    _keep(gm, edgeprune_input_shape=tuple(input_shape),
          edgeprune_arch=getattr(model, "edgeprune_arch", type(model).__name__))
    propagate_shapes(gm)
    from edgeprune.graphunits.discover import stamp_names

    stamp_names(gm)
    return gm


def _keep(gm: fx.GraphModule, **attrs) -> None:
    """Set attributes that survive ``copy.deepcopy`` (which rebuilds a GraphModule from its
    graph and keeps only ``meta``, including this documented key, besides the modules)."""
    from torch.fx.graph_module import _USER_PRESERVED_ATTRIBUTES_KEY

    gm.meta.setdefault(_USER_PRESERVED_ATTRIBUTES_KEY, {}).update(attrs)
    for k, v in attrs.items():
        setattr(gm, k, v)


@torch.no_grad()
def propagate_shapes(gm: fx.GraphModule) -> None:
    """Record every node's output shape for one zero sample (eval mode: BN stats untouched)."""
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = gm.training
    gm.eval()
    try:
        ShapeProp(gm).propagate(torch.zeros(1, *gm.edgeprune_input_shape))
    except Exception as e:
        raise EdgepruneError(f"the model does not run on inputs of shape "
                             f"{gm.edgeprune_input_shape} ({type(e).__name__}: {e}); give the "
                             "input shape it was trained for") from None
    finally:
        gm.train(was_training)


def shape(node: fx.Node) -> tuple[int, ...] | None:
    """The node's output shape, None when it is not a single tensor."""
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
