"""edgeprune: prune skip-units with MSPIC, quantize, and deploy to Jetson-class devices.

The Python API (see :mod:`edgeprune.api`): ``load``, ``load_data``, ``prune_model``,
``export_onnx``, ``quantize_model``, ``profile_onnx``, ``build_model`` and ``build_targets``
(several targets, pruned once), with typed configs
(``BuildConfig``, ``PruneConfig``, ``QuantizeConfig``) and results.
Progress goes to the ``edgeprune`` logger or a callback.
"""

__version__ = "0.1.0"

from edgeprune.errors import EdgepruneError

# Imported on first use, so that ``import edgeprune`` (and ``edgeprune --help``) stays fast.
_API = {"load", "load_data", "prune_model", "export_onnx", "quantize_model", "profile_onnx",
        "build_model", "build_targets", "BuildResult",
        "CallbackProgress", "BuildConfig", "Loaded", "Pruned", "Exported", "Quantized",
        "Checked", "EnginePlan", "Profiled"}
_ELSEWHERE = {"PruneConfig": "edgeprune.prune", "QuantizeConfig": "edgeprune.quantize",
              "PruneResult": "edgeprune.prune", "ExportReport": "edgeprune.export",
              "LoadedModel": "edgeprune.checkpoint", "Dataset": "edgeprune.data",
              "MultiResult": "edgeprune.multitarget"}


def __getattr__(name: str):
    import importlib

    if name in _API:
        return getattr(importlib.import_module("edgeprune.api"), name)
    if name in _ELSEWHERE:
        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")


__all__ = ["EdgepruneError", "__version__", *sorted(_API), *sorted(_ELSEWHERE)]
