"""Model files: load what users give us, save what edgeprune writes.

edgeprune writes a checkpoint dict, loaded with ``torch.load(weights_only=True)`` so that loading
never runs code from the file::

    {"arch": "resnet20", "num_classes": 10, "state_dict": {...},
     "input_shape": [3, 32, 32], "normalization": {"mean": [...], "std": [...]},
     "class_names": [...], "removed_units": ["layer1.1", ...], "edgeprune_version": "..."}

A pruned model is stored as data, timm-style: ``removed_units`` lists the original model's units
that surgery removed, in order. Loading rebuilds the architecture, replays the removals, then
loads the weights, so no original file is needed. A whole pickled ``nn.Module`` is accepted only
with ``trust_model=True``, since unpickling can run arbitrary code. A torch.export archive (.pt2)
loads without unpickling and without the model's class (:mod:`edgeprune.pt2`); edgeprune writes
one beside each pruned checkpoint.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from edgeprune import __version__
from edgeprune.atomic import atomic_path
from edgeprune.errors import EdgepruneError, first_line
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
    # filters were removed (MINT): the tensors' shapes give the widths (see prune.channels)
    channels_pruned: bool = False
    # where mean/std came from: the file, or --mean/--std (edgeprune.normalization); not saved
    normalization_source: str = "checkpoint"

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
        **({"channels_pruned": True} if info.channels_pruned else {}),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


@dataclass(frozen=True)
class ArchSpec:
    """What the command line says about a plain state_dict (``--arch``, ``--num-classes``,
    ``--input-size``); None fields are taken from the weights or the data."""

    name: str
    num_classes: int | None = None
    input_shape: tuple[int, int, int] | None = None


def arch_spec(arch: str | None, num_classes: int | None = None,
              input_size: str | None = None) -> ArchSpec | None:
    """The ``--arch`` options checked (a known name, sane numbers), before any file is read."""
    if arch is None:
        if num_classes is not None or input_size is not None:
            raise EdgepruneError("--num-classes and --input-size describe the architecture of a "
                                 "plain state_dict; pass --arch NAME too")
        return None
    from edgeprune.models import list_architectures

    if arch not in list_architectures():
        raise EdgepruneError(f"unknown architecture {arch!r} for --arch; `edgeprune models` lists "
                             "the names (the zoo's, and tv:NAME for torchvision's, e.g. "
                             "tv:mobilenet_v2)")
    if num_classes is not None:
        _positive_int(num_classes, "--num-classes", MAX_CLASSES)
    return ArchSpec(arch, num_classes, parse_input_size(input_size))


def parse_input_size(value: str | None) -> tuple[int, int, int] | None:
    """``--input-size``: a side (224, meaning 3×224×224) or C,H,W."""
    if value is not None and str(value).strip().isdigit():
        value = f"3,{value},{value}"
    return parse_input_shape(value, "--input-size")


def load_model(path: str | Path, *, trust_model: bool = False,
               arch: ArchSpec | None = None) -> LoadedModel:
    """Load a checkpoint dict, a plain state_dict of the architecture ``arch`` names, or (with
    ``trust_model``) a pickled module, in eval mode.

    Everything the file says is checked before it is used (types, ranges, that the weights fit
    the architecture and are finite, that the model runs on its input shape), so a bad file is
    one clear error here and never a traceback or a wrong result later."""
    path = Path(path)
    _check_model_file(path)
    from edgeprune import pt2

    if pt2.is_pt2(path):
        if arch is not None:
            raise EdgepruneError(f"{path} is a torch.export archive, which holds its own "
                                 f"model, so --arch {arch.name} does not apply; drop --arch "
                                 "(and --num-classes, --input-size)")
        return _from_pt2(path)
    obj = _torch_load(path, trust_model)
    if arch is not None and not _is_bare_weights(obj):
        _refuse_arch(path, obj, arch)
    if isinstance(obj, nn.Module):
        if not trust_model:  # only reachable for exotic files that pass weights_only
            raise EdgepruneError(_PICKLED_MODULE.format(path=path))
        loaded = _from_module(path, obj)
    elif isinstance(obj, dict) and "state_dict" in obj:
        loaded = _from_checkpoint(path, obj)
    elif _is_bare_weights(obj):
        if arch is None:
            raise EdgepruneError(
                f"{path} holds bare weights (a state_dict) with no architecture; pass --arch "
                "NAME (`edgeprune models` lists them, e.g. tv:mobilenet_v2), with --num-classes "
                "and --input-size where the weights and data do not say")
        loaded = _from_state_dict(path, obj, arch)
    else:
        raise EdgepruneError(
            f"{path} is neither an edgeprune checkpoint (a dict with arch, num_classes, "
            "state_dict) nor a pickled nn.Module; save your model as such a checkpoint")
    loaded.model.eval()
    _check_finite(path, loaded.model)
    return loaded


def _from_pt2(path: Path) -> LoadedModel:
    """A torch.export archive, screened so that loading it unpickles nothing (see
    :mod:`edgeprune.pt2`), checked like a checkpoint: finite weights, runs on its shape."""
    from edgeprune import pt2

    loaded = pt2.load_pt2(path)
    _check_finite(path, loaded.model)
    if loaded.info.input_shape:
        width = check_runs(path, loaded.model, loaded.info)
        loaded.info.num_classes = loaded.info.num_classes or width
    return loaded


_PICKLED_MODULE = ("{path} holds a pickled nn.Module, and unpickling it can run code from the "
                   "file; pass --trust-model if you trust its source")
# torch.save writes a zip archive (PK..), older versions a pickle (protocol 2+: 0x80).
_MODEL_MAGIC = (b"PK\x03\x04", b"\x80")


def _check_model_file(path: Path) -> None:
    """Refuse what is plainly not a PyTorch file before the unpickler sees it."""
    if path.is_dir():
        raise EdgepruneError(f"model file {path} is a directory; give the path to a .pt file")
    if not path.is_file():
        raise EdgepruneError(f"model file {path} does not exist; give the path to a .pt file")
    if path.stat().st_size == 0:
        raise EdgepruneError(f"model file {path} is empty; re-save or re-download it")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise EdgepruneError(f"cannot read model file {path} ({e.strerror})") from None
    if path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and not head.startswith(
            _MODEL_MAGIC)):
        raise EdgepruneError(f"{path} looks like an ONNX file; this command takes a PyTorch "
                             "checkpoint (.pt)")
    if not head.startswith(_MODEL_MAGIC):
        raise EdgepruneError(f"{path} is not a PyTorch model file (torch.save writes a zip "
                             f"archive; this starts with {head!r}); give the .pt checkpoint")


def _torch_load(path: Path, trust_model: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_model)
    except pickle.UnpicklingError as e:
        # A pickled class (a whole nn.Module) is refused by the weights-only unpickler as an
        # "Unsupported global"; anything else it cannot parse is a broken file.
        if "Unsupported global" in str(e):
            raise EdgepruneError(_PICKLED_MODULE.format(path=path)) from None
        raise EdgepruneError(f"{path} is corrupt or truncated ({first_line(e)}); "
                             "re-save or re-download it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            AttributeError, ModuleNotFoundError, IndexError, TypeError, ImportError,
            MemoryError, OverflowError) as e:
        # The unpickler of a damaged file fails in many ways; all mean the same to the user.
        raise EdgepruneError(f"{path} is corrupt or truncated ({first_line(e)}); "
                             "re-save or re-download it") from None


def _from_checkpoint(path: Path, ckpt: dict) -> LoadedModel:
    info = _checkpoint_info(path, ckpt)
    state = _state_dict(path, ckpt["state_dict"])
    model = build_arch(info)
    if info.removed_units:
        model = replay_removals(path, model, info)
    if info.channels_pruned:
        from edgeprune.prune.channels import fit_to_state

        fit_to_state(model, state)
    _load_weights(path, model, state, info.arch)
    if info.input_shape:
        check_runs(path, model, info)
    return LoadedModel(model, info)


def build_arch(info: ModelInfo) -> nn.Module:
    """A fresh model of ``info``'s architecture, sized for its classes, channels and input."""
    side = info.input_shape[1] if info.input_shape else None
    return create_model(info.arch, num_classes=info.num_classes, in_channels=info.in_channels,
                        image_size=side)


def replay_removals(path, model: nn.Module, info: ModelInfo) -> nn.Module:
    """The pruned structure rebuilt from data: the removed units' names replayed on a fresh
    model, by module surgery for the zoo's blocks and on the traced graph for any other model
    (tracing is deterministic, so the names mean the same units as when they were removed)."""
    from edgeprune.surgery import remove_units
    from edgeprune.units import list_units, prunable

    if info.input_shape is None and not list_units(model):
        raise EdgepruneError(f"checkpoint {path}: removed_units need the input_shape the model "
                             "was traced at, and the file records none; re-save it with one")
    return remove_units(prunable(model, info.input_shape or ()), info.removed_units)


def _is_bare_weights(obj) -> bool:
    return (isinstance(obj, Mapping) and not isinstance(obj, nn.Module) and bool(obj)
            and "state_dict" not in obj and all(torch.is_tensor(v) for v in obj.values()))


def _refuse_arch(path: Path, obj, arch: ArchSpec) -> None:
    """--arch describes a plain state_dict; a file that names its own model must agree."""
    own = obj.get("arch") if isinstance(obj, dict) else None
    if own != arch.name:
        what = f"an edgeprune checkpoint of {own!r}" if own else "not a plain state_dict"
        raise EdgepruneError(f"{path} is {what}, so --arch {arch.name} does not apply; drop "
                             "--arch (and --num-classes, --input-size)")


def _from_state_dict(path: Path, state, arch: ArchSpec) -> LoadedModel:
    """Weights saved with ``torch.save(model.state_dict())``, loaded into ``arch``. Without
    --input-size the first conv's weights give the channels and the data the image size."""
    state = _state_dict(path, state)
    info = ModelInfo(arch=arch.name, num_classes=arch.num_classes or _classes_of(path, state),
                     input_shape=arch.input_shape)
    if info.input_shape:
        model = build_arch(info)
    else:
        first = next((v for v in state.values() if v.ndim == 4), None)
        model = create_model(arch.name, num_classes=info.num_classes,
                             in_channels=int(first.shape[1]) if first is not None else 3)
    try:
        _load_weights(path, model, state, arch.name)
    except EdgepruneError as e:
        raise EdgepruneError(f"{e}; check --arch, --num-classes and --input-size") from None
    if info.input_shape:
        check_runs(path, model, info)
    return LoadedModel(model, info)


def _classes_of(path: Path, state: Mapping) -> int:
    """The class count from the last matrix in the weights (a classifier's, in every
    architecture edgeprune builds); --num-classes overrides it."""
    mats = [v for v in state.values() if v.ndim == 2]
    if not mats:
        raise EdgepruneError(f"{path}: the weights hold no classifier matrix to count classes "
                             "from; pass --num-classes K")
    return int(mats[-1].shape[0])


def _checkpoint_info(path: Path, ckpt: dict) -> ModelInfo:
    """The checkpoint's fields, each checked for type and range."""
    for key in ("arch", "num_classes"):
        if key not in ckpt:
            raise EdgepruneError(f"checkpoint {path} lacks {key!r}; edgeprune checkpoints "
                                 "hold arch, num_classes and state_dict")
    if not isinstance(ckpt["arch"], str):
        raise EdgepruneError(f"checkpoint {path}: arch must be an architecture name, got "
                             f"{ckpt['arch']!r}")
    num_classes = _positive_int(ckpt["num_classes"], f"checkpoint {path}: num_classes",
                                MAX_CLASSES)
    shape = parse_input_shape(ckpt.get("input_shape"), f"checkpoint {path}: input_shape")
    mean, std = _normalization(path, ckpt.get("normalization"), shape)
    return ModelInfo(
        arch=ckpt["arch"], num_classes=num_classes, input_shape=shape, mean=mean, std=std,
        class_names=_class_names(path, ckpt.get("class_names"), num_classes),
        removed_units=_str_list(path, ckpt.get("removed_units"), "removed_units"),
        channels_pruned=ckpt.get("channels_pruned") is True,
    )


MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; more is a corrupt or mistyped file
MAX_CHANNELS, MAX_SIDE = 16, 4096


def _positive_int(value, what: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise EdgepruneError(f"{what} must be a whole number in 1..{limit:,}, got {value!r}")
    return value


def parse_input_shape(value, what: str = "--input-shape") -> tuple[int, int, int] | None:
    """A (C, H, W) input shape from a checkpoint's list or a "C,H,W" string; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.replace("x", ",").split(",")]
        except ValueError:
            raise EdgepruneError(f"{what} must be three numbers C,H,W (e.g. 3,32,32), got "
                                 f"{value!r}") from None
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise EdgepruneError(f"{what} must be three numbers C,H,W (e.g. 3,32,32), got "
                             f"{value!r}")
    c = _positive_int(value[0], f"{what}: the channel count", MAX_CHANNELS)
    h, w = (_positive_int(v, f"{what}: the image side", MAX_SIDE) for v in value[1:])
    return c, h, w


def _normalization(path: Path, norm, shape) -> tuple[tuple | None, tuple | None]:
    if not norm:
        return None, None
    what = f"checkpoint {path}: normalization"
    if not isinstance(norm, dict) or not norm.get("mean") or not norm.get("std"):
        raise EdgepruneError(f"{what} must be {{'mean': [...], 'std': [...]}}, got {norm!r}")
    mean, std = (_numbers(norm[k], f"{what} {k}") for k in ("mean", "std"))
    channels = shape[0] if shape else len(mean)
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise EdgepruneError(f"{what}: mean and std need one value per channel ({channels}), "
                             f"got {len(mean)} and {len(std)}")
    if min(std) <= 0:
        raise EdgepruneError(f"{what}: std must be positive, got {list(std)}")
    return mean, std


def _numbers(value, what: str) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in value)
    if not ok:
        raise EdgepruneError(f"{what} must be a list of finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _class_names(path: Path, names, num_classes: int) -> list[str] | None:
    if names is None:
        return None
    names = _str_list(path, names, "class_names")
    if len(names) != num_classes:
        raise EdgepruneError(f"checkpoint {path}: class_names has {len(names)} names for "
                             f"{num_classes} classes")
    return names


def _str_list(path: Path, value, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise EdgepruneError(f"checkpoint {path}: {what} must be a list of names, got "
                             f"{value!r}"[:300])
    return list(value)


def _state_dict(path: Path, state) -> Mapping:
    if not isinstance(state, Mapping):
        raise EdgepruneError(f"checkpoint {path}: state_dict must map parameter names to "
                             f"tensors, got a {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise EdgepruneError(f"checkpoint {path}: state_dict entry {bad[0]!r} is not a named "
                             "tensor; save model.state_dict()")
    return state


def _load_weights(path: Path, model: nn.Module, state: Mapping, arch: str) -> None:
    """Load ``state`` strictly, naming what does not fit (the first missing, unexpected or
    mis-shaped tensor) instead of torch's many-line report."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    problems = ([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []) + (
        [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []) + (
        [f"{len(shapes)} of another shape (e.g. {shapes[0]}: {tuple(state[shapes[0]].shape)} "
         f"for {tuple(own[shapes[0]].shape)})"] if shapes else [])
    if problems:
        raise EdgepruneError(f"checkpoint {path}: weights do not fit architecture {arch!r}: "
                             f"{'; '.join(problems)}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise EdgepruneError(f"checkpoint {path}: weights do not fit architecture {arch!r} "
                             f"({first_line(e)})") from None


def _check_finite(path: Path, model: nn.Module) -> None:
    """NaN or infinite weights give NaN outputs: say so at load, not as a failed export."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "infinite"
            raise EdgepruneError(f"model file {path} has {kind} weights (in {name}); the "
                                 "training diverged or the file is damaged: use an earlier "
                                 "checkpoint or retrain")


def check_runs(path, model: nn.Module, info: ModelInfo) -> int:
    """Run the model on one zero image of its input shape; return its output width. A model
    that cannot take the shape, or that disagrees with its class count (unless 0), is refused;
    ``path`` names the model in the message."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *info.input_shape))
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise EdgepruneError(f"{path}: the model cannot take input of shape "
                             f"{tuple(info.input_shape)} ({first_line(e)[:120]})") from None
    if not torch.is_tensor(out) or out.ndim != 2:
        raise EdgepruneError(f"{path}: the model's output has shape "
                             f"{tuple(getattr(out, 'shape', ()))}; edgeprune takes classifiers "
                             "with (batch, classes) logits")
    if info.num_classes and out.shape[1] != info.num_classes:
        raise EdgepruneError(f"{path}: the model outputs {out.shape[1]} classes but its file "
                             f"says {info.num_classes}")
    return int(out.shape[1])


def _from_module(path: Path, model: nn.Module) -> LoadedModel:
    """A pickled module: its shape only if it records one (an ``input_shape`` attribute); the
    data set or ``--input-shape`` supplies it otherwise (see :func:`with_input_shape`)."""
    shape = parse_input_shape(getattr(model, "input_shape", None),
                              f"{path}: the module's input_shape")
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)]
    info = ModelInfo(arch=str(getattr(model, "edgeprune_arch", type(model).__name__)),
                     num_classes=fc[-1].out_features if fc else 0, input_shape=shape)
    if shape:
        info.num_classes = check_runs(path, model, replace(info, num_classes=0))
    return LoadedModel(model, info)


def with_input_shape(loaded: LoadedModel, given: str | None = None, *,
                     guess: bool = False) -> tuple[int, int, int]:
    """The model's input shape: given (``--input-shape C,H,W``, which must agree with a recorded
    one), recorded in the file, or with ``guess``, the first convolution's channels at 32×32.
    Sets it on ``loaded.info`` after checking that the model runs on it."""
    info = loaded.info
    shape = parse_input_shape(given)
    if shape and info.input_shape and shape != tuple(info.input_shape):
        raise EdgepruneError(f"--input-shape {given} differs from the model's recorded input "
                             f"shape {tuple(info.input_shape)}; drop the option")
    shape = shape or info.input_shape
    if shape is None and guess:
        convs = [m for m in loaded.model.modules() if isinstance(m, nn.Conv2d)]
        shape = (convs[0].in_channels, 32, 32) if convs else None
    if shape is None:
        raise EdgepruneError(f"the model ({info.arch}) records no input shape; pass "
                             "--input-shape C,H,W (e.g. 3,32,32)")
    probe = replace(info, input_shape=shape, num_classes=0)
    try:
        width = check_runs(info.arch, loaded.model, probe)
    except EdgepruneError as e:
        if given or info.input_shape:
            raise
        raise EdgepruneError(f"{e}; pass --input-shape C,H,W with the shape it takes") from None
    info.input_shape, info.num_classes = tuple(shape), width
    return info.input_shape


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
    _check_class_names(info, dataset)


def _check_class_names(info: ModelInfo, dataset) -> None:
    """Folder names are the classes' identity: the same names in another order would silently
    swap labels, other names mean other classes. Other kinds number their classes, so only
    imagefolder is compared."""
    if dataset.kind != "imagefolder" or not info.class_names:
        return
    ours, theirs = list(info.class_names), list(dataset.class_names)
    if ours == theirs:
        return
    if sorted(ours) == sorted(theirs):
        raise EdgepruneError(
            f"{dataset.spec}: the class folders sort as {_few(theirs)} but the model's classes "
            f"are in the order {_few(ours)}; the labels would be swapped: rename the folders so "
            "that they sort in the model's order")
    only_model = sorted(set(ours) - set(theirs))
    only_data = sorted(set(theirs) - set(ours))
    raise EdgepruneError(
        f"{dataset.spec}: the class folders differ from the model's classes (only in the "
        f"model: {_few(only_model) or '-'}; only in the data: {_few(only_data) or '-'}); use "
        "data with the model's classes")


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")


def data_for_model(loaded: LoadedModel, dataset):
    """The data set checked against the model and normalised as the model was trained."""
    info = loaded.info
    if info.input_shape is not None:  # images read from files take the model's size
        dataset = dataset.resized(tuple(info.input_shape)[1:])
    if info.input_shape is None:  # a pickled module: the data says what it must take
        with_input_shape(loaded, ",".join(str(s) for s in dataset.input_shape))
    check_model_fits_data(info, dataset)
    if info.mean is not None and info.std is not None:
        return dataset.with_normalization(info.mean, info.std, info.normalization_source)
    return dataset
