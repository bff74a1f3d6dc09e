"""Data sets chosen by a spec string, with normalisation and train/val/test splits.

Specs (a registry: ``DATA_KINDS``):

    cifar10:DIR      the CIFAR-10 python batches (data_batch_1..5, test_batch, batches.meta)
    npz:FILE         keys x_train, y_train, x_test, y_test; uint8 images, NCHW or NHWC
    imagefolder:DIR  DIR/train/CLASS/* and DIR/val/CLASS/*, any format Pillow reads, any size:
                     read on demand, resized and centre-cropped (see edgeprune.imagefiles)
    digits           scikit-learn's bundled 8×8 handwritten digits (offline, real data)

Images are kept as uint8 NCHW arrays; ``Dataset.batches`` normalises them on the fly. The
validation split is held out from the training data (stratified, fixed seed), so pruning decisions
never look at the test split. Calibration samples also come from the training split.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from edgeprune.errors import EdgepruneError, first_line

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

    def with_normalization(self, mean, std, source: str = "checkpoint") -> Dataset:
        """The same data, normalised as a model was trained (its checkpoint's values)."""
        return replace(self, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                       extra={**self.extra, "normalization_source": source})

    def resized(self, size: tuple[int, int]) -> Dataset:
        """Images read from files, resized and cropped to ``size`` (H, W) instead; arrays
        cannot be, and are returned as they are (the model check then names the mismatch)."""
        from edgeprune.imagefiles import ImageFiles

        if not isinstance(self.train.x, ImageFiles) or tuple(size) == self.input_shape[1:]:
            return self
        return replace(self, **{name: Split(s.x.resized(size), s.y) for name, s in
                                (("train", self.train), ("val", self.val), ("test", self.test))})

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """uint8 NCHW -> float32 NCHW, exactly the preprocessing used at inference."""
        return normalize(x, self.mean, self.std)

    def batches(self, split: str, batch_size: int = 256, *, shuffle: bool = False,
                augment: bool = False, seed: int = 0,
                limit: int | None = None,
                order: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised (x, y) tensor batches. ``augment`` applies the standard CIFAR augmentation
        (4-pixel padded random crop, horizontal flip) to 32×32 images and nothing to others.
        ``order``: the sample indices to use, in that order (a distributed sampler's share)."""
        s = self.split(split)
        rng = np.random.default_rng(seed)
        if order is None:
            order = rng.permutation(len(s)) if shuffle else np.arange(len(s))
        if limit is not None:
            order = order[:limit]
        from edgeprune.imagefiles import ImageFiles, stream

        if isinstance(s.x, ImageFiles):  # decoded by DataLoader workers, a batch at a time
            xs = stream(s.x, order, batch_size)
        else:
            xs = (s.x[order[i:i + batch_size]] for i in range(0, len(order), batch_size))
        for start, x in zip(range(0, len(order), batch_size), xs):
            idx = order[start:start + batch_size]
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


def normalize(x: np.ndarray, mean, std) -> np.ndarray:
    """uint8 NCHW -> float32 NCHW: x / 255, then (x - mean) / std per channel."""
    mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return ((x.astype(np.float32) / 255.0) - mean) / std


@dataclass(frozen=True)
class Normalization:
    """A normalisation without images: what int8 calibration on a ``calib:DIR`` folder of
    unlabeled images takes when there is no ``--data`` (the model's mean/std)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = "checkpoint"
    spec: str = "calib"

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return normalize(x, self.mean, self.std)

    def with_normalization(self, mean, std, source: str = "calibration recipe") -> Normalization:
        return replace(self, mean=tuple(float(m) for m in mean),
                       std=tuple(float(s) for s in std), source=source)


# ---------------------------------------------------------------- spec parsing


def load_dataset(spec: str) -> Dataset:
    """Parse a data spec and load the data set, refusing data that cannot train or decide
    anything (see :func:`_check_labels`) before any work is done on it."""
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
    _check_split(spec, "train", train)
    _check_split(spec, "test", test)
    if train.x.shape[1:] != test.x.shape[1:]:
        raise EdgepruneError(f"data spec {spec!r}: train images {train.x.shape[1:]} and test "
                             f"images {test.x.shape[1:]} differ in shape")
    _check_labels(spec, train, test, names)
    train, val = _hold_out(train, VAL_FRACTION)
    mean, std = norm if norm else _channel_stats(_stats_sample(train))
    source = f"{kind} constants" if norm else "the training split's per-channel statistics"
    return Dataset(spec, train, val, test, names, mean, std, {"normalization_source": source})


def _stats_sample(train: Split, n: int = 512) -> np.ndarray:
    """What the channel statistics are taken from: all of an in-memory split, a stratified
    sample of images read from files (decoding every image for a mean would be a pass over
    the whole data set)."""
    from edgeprune.imagefiles import ImageFiles

    if not isinstance(train.x, ImageFiles) or len(train) <= n:
        return np.asarray(train.x)
    return np.asarray(train.x[_stratified_indices(train.y, n, SPLIT_SEED)])


def _check_split(spec: str, name: str, s: Split) -> None:
    if len(s.x) != len(s.y):
        raise EdgepruneError(f"{spec}: the {name} split has {len(s.x)} images but {len(s.y)} "
                             "labels; give one label per image")
    if len(s) == 0:
        raise EdgepruneError(f"{spec}: the {name} split is empty; give a data set with images "
                             "in it")
    if s.x.dtype != np.uint8 or s.x.ndim != 4:
        raise EdgepruneError(f"{spec}: {name} images must be uint8 with shape (N, C, H, W), "
                             f"got {s.x.dtype} {s.x.shape}")
    if min(s.x.shape[1:]) < 1:
        raise EdgepruneError(f"{spec}: {name} images have an empty dimension {s.x.shape[1:]}")


def _check_labels(spec: str, train: Split, test: Split, names: list[str]) -> None:
    """Labels number the classes 0..K-1, K = len(names), and every class has at least two
    training images: one to train on and one held out for validation. A stray label (0..9 plus
    one 99) would otherwise make a 100-class model, and a class absent from the validation
    split makes every pruning decision on it meaningless."""
    k = len(names)
    if k < 2:
        raise EdgepruneError(f"{spec}: the data has {k} class(es); a classifier needs at least "
                             "two")
    for name, s in (("train", train), ("test", test)):
        bad = s.y[(s.y < 0) | (s.y >= k)]
        if len(bad):
            raise EdgepruneError(f"{spec}: {name} label {int(bad[0])} is outside 0..{k - 1} "
                                 f"(the {k} classes {_names(names)}); fix or drop that label")
    classes, counts = np.unique(train.y, return_counts=True)
    if len(classes) < k:
        missing = sorted(set(range(k)) - set(classes.tolist()))
        raise EdgepruneError(
            f"{spec}: {len(missing)} of the {k} classes have no training image (e.g. class "
            f"{names[missing[0]]!r}); labels must number the classes present 0..K-1, so is the "
            f"largest label, {k - 1}, a stray one?")
    if counts.min() < 2:
        few = names[int(classes[np.argmin(counts)])]
        raise EdgepruneError(
            f"{spec}: class {few!r} has {int(counts.min())} training image; every class needs "
            "at least 2 (one is held out for validation): add images or drop the class")


def _names(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{names[0]} .. {names[-1]}"


def _hold_out(train: Split, fraction: float) -> tuple[Split, Split]:
    """A stratified validation split of ``fraction`` of the training data, with at least one
    image of every class (small data sets would otherwise leave classes unvalidated)."""
    n_val = max(1, round(len(train) * fraction))
    val_idx = _stratified_indices(train.y, n_val, SPLIT_SEED, min_per_class=1)
    mask = np.ones(len(train), bool)
    mask[val_idx] = False
    return Split(train.x[mask], train.y[mask]), Split(train.x[val_idx], train.y[val_idx])


def _stratified_indices(y: np.ndarray, n: int, seed: int, *,
                        min_per_class: int = 0) -> np.ndarray:
    """``n`` indices of ``y`` with its class proportions (largest remainders), sorted; each
    class gets at least ``min_per_class`` (which may make the total larger than ``n``)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts / counts.sum() * n
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take))[: n - take.sum()]:
        take[i] += 1
    take = np.minimum(np.maximum(take, min_per_class), counts)
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
    if x.shape[1] > MAX_CHANNELS:
        raise EdgepruneError(f"{where}: images of shape {x.shape[1:]} have {x.shape[1]} "
                             "channels; give (N, C, H, W) or (N, H, W, C) with 1 or 3 channels")
    return np.ascontiguousarray(x)


MAX_CHANNELS = 16  # more is a mis-ordered axis, not an image


def _labels(y, where: str) -> np.ndarray:
    """Labels as int64 of shape (N,): integers, or floats that are whole numbers. Strings,
    fractions and one-hot rows are refused, since casting them would invent classes."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise EdgepruneError(f"{where}: labels must be one class number per image, got shape "
                             f"{y.shape} (one-hot rows? store their argmax)")
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        if y.dtype == np.uint64 and len(y) and y.max() > np.iinfo(np.int64).max:
            raise EdgepruneError(f"{where}: label {int(y.max())} is not a class number")
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        whole = np.isfinite(y) & (y == np.round(y)) & (np.abs(y) < 2**31)
        if not whole.all():
            bad = y[~whole][0]
            raise EdgepruneError(f"{where}: label {bad!r} is not a whole number; labels must "
                                 "be class numbers 0..K-1")
        return y.astype(np.int64)
    raise EdgepruneError(f"{where}: labels must be integers 0..K-1, got {y.dtype} values")


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
    where = f"npz:{arg}"
    try:
        f = np.load(arg, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):  # one array: an .npy file
            raise EdgepruneError(f"{where} is a single array (.npy), not an .npz archive with "
                                 "x_train, y_train, x_test, y_test")
        with f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise EdgepruneError(f"{where} lacks the keys {sorted(missing)}; it needs "
                                     "x_train, y_train, x_test, y_test")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise EdgepruneError(f"{where} is not a readable .npz file ({first_line(e)})") from None
    for k in ("x_train", "x_test"):
        if arrays[k].dtype != np.uint8:
            raise EdgepruneError(f"{where}: {k} must be uint8 images (0..255), got "
                                 f"{arrays[k].dtype}; convert with (x * 255).astype(np.uint8) "
                                 "if they are floats in [0, 1]")
    train = Split(_to_nchw(arrays["x_train"], where), _labels(arrays["y_train"], where))
    test = Split(_to_nchw(arrays["x_test"], where), _labels(arrays["y_test"], where))
    # The classes are what the training labels number; stray and test-only labels are
    # load_dataset's checks to refuse. max() of an empty split would raise: leave that to them.
    k = int(train.y.max()) + 1 if len(train.y) else 0
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
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            KeyError, AttributeError) as e:
        raise EdgepruneError(f"cannot read CIFAR batch {path} ({first_line(e)})") from None
    if not isinstance(d, dict):
        raise EdgepruneError(f"CIFAR batch {path} holds a {type(d).__name__}, not the dict "
                             "with data and labels that the CIFAR-10 python batches hold")
    d = {k.decode(errors="replace") if isinstance(k, bytes) else k: v for k, v in d.items()}
    missing = [k for k in ("data", "labels") if k not in d]
    if missing:
        raise EdgepruneError(f"CIFAR batch {path} lacks {' and '.join(missing)}; use the "
                             "CIFAR-10 python batches (cifar-10-batches-py)")
    return d


CIFAR_ROW = 3 * 32 * 32  # one image per row: 1024 red, 1024 green, 1024 blue values


def _batch_split(path: Path) -> Split:
    d = _read_batch(path)
    x = np.asarray(d["data"])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != CIFAR_ROW:
        raise EdgepruneError(f"CIFAR batch {path}: data must be uint8 rows of {CIFAR_ROW} "
                             f"values (3×32×32), got {x.dtype} of shape {x.shape}")
    y = _labels(d["labels"], f"CIFAR batch {path}")
    if len(y) != len(x):
        raise EdgepruneError(f"CIFAR batch {path} has {len(x)} images but {len(y)} labels")
    return Split(x.reshape(-1, 3, 32, 32), y)


def _load_cifar10(arg: str) -> Loaded:
    root = Path(arg)
    if not root.is_dir():
        raise EdgepruneError(f"cifar10:{arg} is a file; point it at the extracted "
                             "cifar-10-batches-py folder")
    files = [root / f"data_batch_{i}" for i in range(1, 6)] + [root / "test_batch"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise EdgepruneError(f"cifar10:{arg} lacks {', '.join(missing)}; point it at the "
                             "extracted cifar-10-batches-py folder")

    def split(paths: list[Path]) -> Split:
        parts = [_batch_split(p) for p in paths]
        return Split(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))

    return split(files[:5]), split(files[5:]), CIFAR10_CLASSES, (CIFAR10_MEAN, CIFAR10_STD)


def _load_imagefolder(arg: str) -> Loaded:
    root = Path(arg)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise EdgepruneError(f"imagefolder:{arg} needs the folders {arg}/train/CLASS and "
                             f"{arg}/val/CLASS")
    names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not names:
        raise EdgepruneError(f"imagefolder:{arg}/train has no class folders")
    extra = sorted(p.name for p in (root / "val").iterdir() if p.is_dir() and p.name not in names)
    if extra:
        raise EdgepruneError(f"imagefolder:{arg}/val has class folder(s) {', '.join(extra)} "
                             "that train lacks; give train and val the same classes")

    from edgeprune.imagefiles import ImageFiles, check_image, image_extensions

    extensions = image_extensions()
    sizes: list[tuple[int, int]] = []

    def split(folder: Path) -> tuple[list[Path], list[int]]:
        paths, ys = [], []
        for label, name in enumerate(names):
            files = sorted(f for f in (folder / name).iterdir() if f.is_file() and
                           f.suffix.lower() in extensions) if (folder / name).is_dir() else []
            if not files and folder.name == "train":
                raise EdgepruneError(f"{folder / name} has no images (PNG, JPEG or another "
                                     "format Pillow reads); add some or remove the class folder")
            for f in files:
                w, h = check_image(f)  # a bad file is named now, before any work
                sizes.append((h, w))
                paths.append(f)
                ys.append(label)
        if not paths:
            raise EdgepruneError(f"{folder} has no images under its class folders")
        return paths, ys

    train, val = split(root / "train"), split(root / "val")
    size = _common_size(sizes)
    return (Split(ImageFiles(train[0], size), np.asarray(train[1], np.int64)),
            Split(ImageFiles(val[0], size), np.asarray(val[1], np.int64)), names, None)


def _common_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """Images of one size keep it; mixed sizes are cropped to a square of the median shorter
    side, until a model says which size it takes (:meth:`Dataset.resized`)."""
    if len(set(sizes)) == 1:
        return sizes[0]
    side = int(np.median([min(s) for s in sizes]))
    return side, side


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
