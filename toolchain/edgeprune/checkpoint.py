"""Model files: load what users give us, save what edgeprune writes.

edgeprune writes a checkpoint dict, loaded with ``torch.load(weights_only=True)`` so that loading
never runs code from the file::

    {"arch": "resnet20", "num_classes": 10, "state_dict": {...},
     "input_shape": [3, 32, 32], "normalization": {"mean": [...], "std": [...]},
     "class_names": [...], "removed_units": ["layer1.1", ...], "edgeprune_version": "..."}

A pruned model is stored as data, timm-style: ``removed_units`` lists the original model's units
that surgery removed, in order. Loading rebuilds the architecture, replays the removals, then
loads the weights, so no original file is needed. A whole pickled ``nn.Module`` is accepted only
with ``trust_model=True``, since unpickling can run arbitrary code.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeprune import __version__
from edgeprune.atomic import atomic_path
from edgeprune.errors import EdgepruneError
from edgeprune.models import create_model


@dataclass
class ModelInfo:
    """What a model file says about its model besides the weights."""

    arch: str
    num_classes: int
    input_shape: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: list[str] | None = None
    removed_units: list[str] = field(default_factory=list)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0] if self.input_shape else 3


@dataclass
class LoadedModel:
    model: nn.Module
    info: ModelInfo


def save_checkpoint(path: str | Path, model: nn.Module, info: ModelInfo) -> Path:
    """Write ``model`` and ``info`` as an edgeprune checkpoint, atomically."""
    ckpt = {
        "arch": info.arch,
        "num_classes": info.num_classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "input_shape": list(info.input_shape) if info.input_shape else None,
        "normalization": ({"mean": list(info.mean), "std": list(info.std)}
                          if info.mean is not None else None),
        "class_names": info.class_names,
        "removed_units": list(info.removed_units),
        "edgeprune_version": __version__,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_model(path: str | Path, *, trust_model: bool = False) -> LoadedModel:
    """Load a checkpoint dict (or, with ``trust_model``, a pickled module) in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise EdgepruneError(f"model file {path} does not exist; give the path to a .pt file")
    if path.stat().st_size == 0:
        raise EdgepruneError(f"model file {path} is empty; re-save or re-download it")
    obj = _torch_load(path, trust_model)
    if isinstance(obj, nn.Module):
        if not trust_model:  # only reachable for exotic files that pass weights_only
            raise EdgepruneError(_PICKLED_MODULE.format(path=path))
        loaded = LoadedModel(obj, _info_of_module(obj))
    elif isinstance(obj, dict) and "state_dict" in obj:
        loaded = _from_checkpoint(path, obj)
    else:
        raise EdgepruneError(
            f"{path} is neither an edgeprune checkpoint (a dict with arch, num_classes, "
            "state_dict) nor a pickled nn.Module; save your model as such a checkpoint")
    loaded.model.eval()
    return loaded


_PICKLED_MODULE = ("{path} holds a pickled nn.Module, and unpickling it can run code from the "
                   "file; pass --trust-model if you trust its source")


def _torch_load(path: Path, trust_model: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_model)
    except pickle.UnpicklingError as e:
        # A pickled class (a whole nn.Module) is refused by the weights-only unpickler as an
        # "Unsupported global"; anything else it cannot parse is a broken file.
        if "Unsupported global" in str(e):
            raise EdgepruneError(_PICKLED_MODULE.format(path=path)) from None
        raise EdgepruneError(f"{path} is corrupt or truncated ({_first_line(e)}); "
                             "re-save or re-download it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            AttributeError, ModuleNotFoundError) as e:
        raise EdgepruneError(f"{path} is corrupt or truncated ({_first_line(e)}); "
                             "re-save or re-download it") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__


def _from_checkpoint(path: Path, ckpt: dict) -> LoadedModel:
    for key in ("arch", "num_classes"):
        if key not in ckpt:
            raise EdgepruneError(f"checkpoint {path} lacks {key!r}; edgeprune checkpoints "
                                 "hold arch, num_classes and state_dict")
    norm = ckpt.get("normalization") or {}
    shape = ckpt.get("input_shape")
    info = ModelInfo(
        arch=str(ckpt["arch"]), num_classes=int(ckpt["num_classes"]),
        input_shape=tuple(int(s) for s in shape) if shape else None,
        mean=tuple(norm["mean"]) if norm.get("mean") else None,
        std=tuple(norm["std"]) if norm.get("std") else None,
        class_names=ckpt.get("class_names"),
        removed_units=list(ckpt.get("removed_units") or []),
    )
    model = create_model(info.arch, num_classes=info.num_classes, in_channels=info.in_channels)
    if info.removed_units:
        from edgeprune.surgery import remove_units

        model = remove_units(model, info.removed_units)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise EdgepruneError(f"checkpoint {path}: weights do not fit architecture "
                             f"{info.arch!r} ({_first_line(e)})") from None
    return LoadedModel(model, info)


def _info_of_module(model: nn.Module) -> ModelInfo:
    # A pickled module carries no input shape: the data set supplies it (data_for_model).
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return ModelInfo(arch=getattr(model, "edgeprune_arch", type(model).__name__),
                     num_classes=fc[-1].out_features if fc else 0)


def check_model_fits_data(info: ModelInfo, dataset) -> None:
    """Raise a clear error when the data's images or classes do not match the model."""
    if info.input_shape and tuple(info.input_shape) != tuple(dataset.input_shape):
        raise EdgepruneError(
            f"the model takes images of shape {tuple(info.input_shape)} but {dataset.spec} has "
            f"{tuple(dataset.input_shape)}; use data of the shape the model was trained on")
    if info.num_classes != dataset.num_classes:
        raise EdgepruneError(
            f"the model has {info.num_classes} classes but {dataset.spec} has "
            f"{dataset.num_classes}; use data with the model's classes")


def data_for_model(loaded: LoadedModel, dataset):
    """The data set checked against the model and normalised as the model was trained."""
    info = loaded.info
    if info.input_shape is None:
        info.input_shape = tuple(dataset.input_shape)
    check_model_fits_data(info, dataset)
    if info.mean is not None and info.std is not None:
        return dataset.with_normalization(info.mean, info.std)
    return dataset
