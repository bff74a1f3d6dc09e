"""Data sets chosen by a spec string, with normalisation and train/val/test splits.

Specs (a registry: ``DATA_KINDS``):

    cifar10:DIR      the CIFAR-10 python batches (data_batch_1..5, test_batch, batches.meta)
    npz:FILE         keys x_train, y_train, x_test, y_test; uint8 images, NCHW or NHWC
    imagefolder:DIR  DIR/train/CLASS/*.png and DIR/val/CLASS/*.png
    digits           scikit-learn's bundled 8×8 handwritten digits (offline, real data)

Images are kept as uint8 NCHW arrays; ``Dataset.batches`` normalises them on the fly. The
validation split is held out from the training data (stratified, fixed seed), so pruning decisions
never look at the test split. Calibration samples also come from the training split.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from edgeprune.errors import EdgepruneError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
VAL_FRACTION = 0.1
SPLIT_SEED = 0  # the split never depends on the training seed


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # uint8, (N, C, H, W)
    y: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """A data set with its splits and the normalisation applied at inference."""

    spec: str
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise EdgepruneError(f"unknown split {name!r}; use train, val or test")
        return getattr(self, name)

    def with_normalization(self, mean, std) -> Dataset:
        """The same data, normalised as a model was trained (its checkpoint's values)."""
        return replace(self, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """uint8 NCHW -> float32 NCHW, exactly the preprocessing used at inference."""
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return ((x.astype(np.float32) / 255.0) - mean) / std

    def batches(self, split: str, batch_size: int = 256, *, shuffle: bool = False,
                augment: bool = False, seed: int = 0,
                limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised (x, y) tensor batches. ``augment`` applies the standard CIFAR augmentation
        (4-pixel padded random crop, horizontal flip) to 32×32 images and nothing to others."""
        s = self.split(split)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(s)) if shuffle else np.arange(len(s))
        if limit is not None:
            order = order[:limit]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = s.x[idx]
            if augment and x.shape[2:] == (32, 32):
                x = _cifar_augment(x, rng)
            yield torch.from_numpy(self.normalize(x)), torch.from_numpy(s.y[idx].astype(np.int64))

    def sample(self, split: str, n: int, *, seed: int = 0) -> Split:
        """``n`` samples drawn with the class balance of the split (stratified), seeded."""
        s = self.split(split)
        if n >= len(s):
            return s
        idx = _stratified_indices(s.y, n, seed)
        return Split(s.x[idx], s.y[idx])


# ---------------------------------------------------------------- spec parsing


def load_dataset(spec: str) -> Dataset:
    """Parse a data spec and load the data set."""
    kind, _, arg = spec.partition(":")
    if kind not in DATA_KINDS:
        raise EdgepruneError(
            f"unknown data spec {spec!r}; use one of: cifar10:DIR, npz:FILE, imagefolder:DIR, "
            "digits")
    needs_arg = kind != "digits"
    if needs_arg and not arg:
        raise EdgepruneError(f"data spec {spec!r} needs a path, e.g. {kind}:./data")
    if needs_arg and not Path(arg).exists():
        raise EdgepruneError(f"data spec {spec!r}: {arg} does not exist")
    train, test, names, norm = DATA_KINDS[kind](arg)
    _check_split("train", train, len(names))
    _check_split("test", test, len(names))
    if train.x.shape[1:] != test.x.shape[1:]:
        raise EdgepruneError(f"data spec {spec!r}: train images {train.x.shape[1:]} and test "
                             f"images {test.x.shape[1:]} differ in shape")
    train, val = _hold_out(train, VAL_FRACTION)
    mean, std = norm if norm else _channel_stats(train.x)
    return Dataset(spec, train, val, test, names, mean, std)


def _check_split(name: str, s: Split, num_classes: int) -> None:
    if len(s) == 0:
        raise EdgepruneError(f"the {name} split is empty; give a data set with images in it")
    if s.x.dtype != np.uint8 or s.x.ndim != 4:
        raise EdgepruneError(f"{name} images must be uint8 with shape (N, C, H, W), "
                             f"got {s.x.dtype} {s.x.shape}")
    if s.y.min() < 0 or s.y.max() >= num_classes:
        raise EdgepruneError(f"{name} labels must lie in 0..{num_classes - 1}")


def _hold_out(train: Split, fraction: float) -> tuple[Split, Split]:
    n_val = max(1, round(len(train) * fraction))
    val_idx = _stratified_indices(train.y, n_val, SPLIT_SEED)
    mask = np.ones(len(train), bool)
    mask[val_idx] = False
    return Split(train.x[mask], train.y[mask]), Split(train.x[val_idx], train.y[val_idx])


def _stratified_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices of ``y`` with its class proportions (largest remainders), sorted."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts / counts.sum() * n
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take))[: n - take.sum()]:
        take[i] += 1
    picked = [rng.choice(np.flatnonzero(y == c), size=k, replace=False)
              for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xf = x.astype(np.float64) / 255.0
    mean = xf.mean(axis=(0, 2, 3))
    std = np.maximum(xf.std(axis=(0, 2, 3)), 1e-3)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise EdgepruneError(f"{where}: images must be (N, C, H, W) or (N, H, W, C), "
                             f"got shape {x.shape}")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------- loaders


Loaded = tuple[Split, Split, list[str], tuple | None]


def _load_digits(_arg: str) -> Loaded:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    test_idx = _stratified_indices(y, round(0.2 * len(y)), SPLIT_SEED)
    mask = np.ones(len(y), bool)
    mask[test_idx] = False
    names = [str(i) for i in range(10)]
    return Split(x[mask], y[mask]), Split(x[test_idx], y[test_idx]), names, None


def _load_npz(arg: str) -> Loaded:
    try:
        with np.load(arg, allow_pickle=False) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise EdgepruneError(f"npz:{arg} lacks the keys {sorted(missing)}; it needs "
                                     "x_train, y_train, x_test, y_test")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError) as e:
        raise EdgepruneError(f"npz:{arg} is not a readable .npz file ({e})") from None
    for k in ("x_train", "x_test"):
        if arrays[k].dtype != np.uint8:
            raise EdgepruneError(f"npz:{arg}: {k} must be uint8 images, got {arrays[k].dtype}")
    train = Split(_to_nchw(arrays["x_train"], arg), arrays["y_train"].astype(np.int64).ravel())
    test = Split(_to_nchw(arrays["x_test"], arg), arrays["y_test"].astype(np.int64).ravel())
    # max() of an empty split would raise: leave empty splits to _check_split's clear error.
    k = int(max([s.y.max() for s in (train, test) if len(s)], default=-1)) + 1
    is_cifar = train.x.shape[1:] == (3, 32, 32) and k == 10
    names = CIFAR10_CLASSES if is_cifar else [str(i) for i in range(k)]
    return train, test, names, (CIFAR10_MEAN, CIFAR10_STD) if is_cifar else None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of lists and numpy arrays) and refuses anything else,
    so a crafted batch file cannot run code."""

    _ALLOWED = {(mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
                for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise EdgepruneError(f"cannot read CIFAR batch {path} ({e})") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _load_cifar10(arg: str) -> Loaded:
    root = Path(arg)
    files = [root / f"data_batch_{i}" for i in range(1, 6)] + [root / "test_batch"]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise EdgepruneError(f"cifar10:{arg} lacks {', '.join(missing)}; point it at the "
                             "extracted cifar-10-batches-py folder")

    def split(paths: list[Path]) -> Split:
        batches = [_read_batch(p) for p in paths]
        x = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches])
        y = np.concatenate([np.asarray(b["labels"], np.int64) for b in batches])
        return Split(x.reshape(-1, 3, 32, 32), y)

    return split(files[:5]), split(files[5:]), CIFAR10_CLASSES, (CIFAR10_MEAN, CIFAR10_STD)


def _load_imagefolder(arg: str) -> Loaded:
    from PIL import Image

    root = Path(arg)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise EdgepruneError(f"imagefolder:{arg} needs the folders {arg}/train/CLASS and "
                             f"{arg}/val/CLASS")
    names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not names:
        raise EdgepruneError(f"imagefolder:{arg}/train has no class folders")

    def split(folder: Path) -> Split:
        xs, ys = [], []
        for label, name in enumerate(names):
            for f in sorted((folder / name).glob("*.png")) if (folder / name).is_dir() else []:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"))
                xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
                ys.append(label)
        if not xs:
            raise EdgepruneError(f"{folder} has no PNG images under its class folders")
        if len({x.shape for x in xs}) != 1:
            raise EdgepruneError(f"{folder}: images differ in size or channels; resize them "
                                 "to one shape")
        return Split(np.stack(xs).astype(np.uint8), np.asarray(ys, np.int64))

    return split(root / "train"), split(root / "val"), names, None


DATA_KINDS: dict[str, Callable[[str], Loaded]] = {
    "cifar10": _load_cifar10,
    "npz": _load_npz,
    "imagefolder": _load_imagefolder,
    "digits": _load_digits,
}


# ---------------------------------------------------------------- augmentation


def _cifar_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    dy, dx = rng.integers(0, 9, size=n), rng.integers(0, 9, size=n)
    flip = rng.random(n) < 0.5
    out = np.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop[:, :, ::-1] if flip[i] else crop
    return out
