"""Calibration: recipes, a re-iterable source of calibration images, TensorRT calibration caches.

A recipe (calibration/<kind>.toml, picked by the data spec's kind) says how many TRAIN images to
calibrate on, with which method, and checks the input size; options override it. The source
yields the images preprocessed exactly as at inference (``Dataset.normalize`` with the model's
normalisation), and can be iterated any number of times: pruning and quantization both read it.
ONNX Runtime's ``CalibrationDataReader`` wrapper lives in the int8 code, the only place that needs
it.

The TensorRT calibration cache is the text file TensorRT's int8 calibrators read and write
(``readCalibrationCache``/``writeCalibrationCache``): a header line ``TRT-<version>-<algorithm>``,
then one line per tensor, ``<tensor name>: <scale>``, the scale (amax / 127) written as the hex of
its big-endian float32 bits.
"""

from __future__ import annotations

import struct
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeprune.atomic import write_text
from edgeprune.errors import EdgepruneError
from edgeprune.paths import calibration_dir

METHODS = ("minmax", "entropy", "percentile")
# The header TensorRT's calibrators expect: a calibrator ignores a cache whose algorithm is not
# its own, and trtexec --calib (like most deployment code) uses IInt8EntropyCalibrator2.
DEFAULT_CACHE_ALGORITHM = "EntropyCalibration2"
CACHE_ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration",
                    "LegacyCalibration")
INT8_MAX = 127.0


@dataclass(frozen=True)
class CalibrationRecipe:
    """How to calibrate for one kind of data (one TOML file in calibration/)."""

    name: str
    input_size: tuple[int, ...] = ()  # C, H, W; empty = any
    layout: str = "NCHW"
    mean: tuple[float, ...] | None = None  # None = the model's (checkpoint) normalisation
    std: tuple[float, ...] | None = None
    samples: int = 256
    method: str = "entropy"
    percentile: float = 99.99

    def with_overrides(self, *, samples: int | None = None, method: str | None = None,
                       percentile: float | None = None) -> CalibrationRecipe:
        """The recipe with the options the user gave (None keeps the recipe's value)."""
        r = replace(self, samples=self.samples if samples is None else int(samples),
                    method=self.method if method is None else method,
                    percentile=self.percentile if percentile is None else float(percentile))
        r.validate()
        return r

    def validate(self) -> None:
        if self.method not in METHODS:
            raise EdgepruneError(f"unknown calibration method {self.method!r}; choose one of: "
                                 f"{', '.join(METHODS)}")
        if self.samples < 1:
            raise EdgepruneError(f"the calibration set is empty ({self.samples} samples); pass "
                                 "--calibration-samples 1 or more")
        if not 50.0 < self.percentile <= 100.0:
            raise EdgepruneError(f"percentile {self.percentile} is out of range; give a value in "
                                 "(50, 100], e.g. 99.99")
        if self.layout != "NCHW":
            raise EdgepruneError(f"recipe {self.name!r}: layout {self.layout!r} is not supported; "
                                 "edgeprune models take NCHW")

    def to_dict(self) -> dict:
        return {"recipe": self.name, "samples": self.samples, "method": self.method,
                "percentile": self.percentile if self.method == "percentile" else None,
                "layout": self.layout}


def list_recipes() -> list[str]:
    return sorted(p.stem for p in calibration_dir().glob("*.toml"))


def load_recipe(name_or_path: str) -> CalibrationRecipe:
    """A recipe by data kind (``digits``, ``cifar10``...) or by the path of a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = calibration_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        raise EdgepruneError(f"no calibration recipe {name_or_path!r}; there are: "
                             f"{', '.join(list_recipes())} (in {calibration_dir()}), or give "
                             "the path of a .toml recipe")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise EdgepruneError(f"calibration recipe {path} is not valid TOML ({e})") from None
    known = {"name", "input_size", "layout", "mean", "std", "samples", "method", "percentile"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise EdgepruneError(f"calibration recipe {path} has unknown keys {unknown}; its keys "
                             f"are: {', '.join(sorted(known))}")

    def norm(key: str) -> tuple[float, ...] | None:
        value = raw.get(key, "model")
        return None if value == "model" else tuple(float(v) for v in value)

    recipe = CalibrationRecipe(
        name=str(raw.get("name", path.stem)), input_size=tuple(raw.get("input_size", ())),
        layout=str(raw.get("layout", "NCHW")), mean=norm("mean"), std=norm("std"),
        samples=int(raw.get("samples", 256)), method=str(raw.get("method", "entropy")),
        percentile=float(raw.get("percentile", 99.99)))
    recipe.validate()
    return recipe


# ---------------------------------------------------------------- calib:DIR


CALIB_PREFIX = "calib:"


def check_calibration_spec(spec: str) -> None:
    """A ``calib:DIR`` spec's form (no file is read): one-line errors."""
    if not spec.startswith(CALIB_PREFIX):
        raise EdgepruneError(f"unknown calibration data {spec!r}; give calib:DIR (a folder of "
                             "unlabeled images), or leave it out to calibrate on --data's "
                             "train split")


def calibrates_without_data(precision: str, calibration_data: str | None) -> bool:
    """int8 from a calib:DIR folder needs no --data (its accuracy is then not measured)."""
    return precision == "int8" and bool(calibration_data)


def calibration_folder(spec: str) -> Path:
    """The folder of a ``calib:DIR`` spec, checked to exist and hold images (one-line errors).
    Run before any work, and again when the images are read."""
    from edgeprune.imagefiles import find_images

    check_calibration_spec(spec)
    arg = spec[len(CALIB_PREFIX):]
    if not arg:
        raise EdgepruneError(f"calibration data {spec!r} needs a folder, e.g. calib:./images")
    root = Path(arg)
    if not root.exists():
        raise EdgepruneError(f"calibration data {spec!r}: {arg} does not exist")
    if not root.is_dir():
        raise EdgepruneError(f"calibration data {spec!r}: {arg} is not a folder; give a folder "
                             "of images (flat or nested)")
    files, skipped = find_images(root)
    if not files:
        links = f" ({skipped} link(s) leading out of it skipped)" if skipped else ""
        raise EdgepruneError(f"calibration data {spec!r}: {arg} has no images (PNG, JPEG or "
                             f"another format Pillow reads){links}; add some")
    return root


@dataclass(frozen=True)
class CalibrationImages:
    """Unlabeled images from a ``calib:DIR`` folder, as a model takes them: a seeded subset of
    at most ``samples`` files, read and resized a batch at a time (names only are held)."""

    spec: str
    files: object  # ImageFiles
    total: int     # images in the folder
    skipped: int   # links leading out of the folder, not read

    @classmethod
    def load(cls, spec: str, input_shape, samples: int, seed: int = 0) -> CalibrationImages:
        from edgeprune.imagefiles import ImageFiles, check_image, find_images

        files, skipped = find_images(calibration_folder(spec))
        rng = np.random.default_rng(seed)
        picked = sorted(rng.choice(len(files), size=min(samples, len(files)), replace=False))
        chosen = [files[i] for i in picked]
        for f in chosen:  # a bad file is named now, before any calibration
            check_image(f)
        c, h, w = (int(v) for v in input_shape)
        if c not in (1, 3):
            raise EdgepruneError(f"calibration data {spec!r}: the model takes {c}-channel "
                                 "inputs; image files give 1 (grayscale) or 3 (RGB)")
        return cls(spec, ImageFiles(chosen, (h, w), c), len(files), skipped)

    def describe(self) -> str:
        return (f"{self.spec} ({len(self.files)} of {self.total} unlabeled images"
                + (f"; {self.skipped} link(s) out of the folder skipped)" if self.skipped
                   else ")"))


class CalibrationSource:
    """Calibration images, normalised as at inference and yielded as float32 NCHW batches:
    a stratified, seeded subset of the TRAIN split of ``data``, or, with ``images``, the
    unlabeled images of a ``calib:DIR`` folder (``data`` then only gives the normalisation:
    anything with ``normalize``, ``mean`` and ``std``). Iterating again yields the same
    batches."""

    def __init__(self, data, recipe: CalibrationRecipe, *, batch_size: int = 1, seed: int = 0,
                 images: CalibrationImages | None = None):
        shape = tuple(images.files.shape[1:]) if images is not None else tuple(data.input_shape)
        where = images.spec if images is not None else data.spec
        if recipe.input_size and tuple(recipe.input_size) != shape:
            raise EdgepruneError(
                f"calibration recipe {recipe.name!r} expects inputs {tuple(recipe.input_size)} "
                f"but {where} has {shape}; fix input_size in the recipe")
        if recipe.mean is not None and recipe.std is not None:
            data = data.with_normalization(recipe.mean, recipe.std)
        self.data = data
        self.recipe = recipe
        self.images = images
        self.batch_size = max(1, int(batch_size))
        self.split = None  # the train images picked (None: a calib:DIR folder's)
        if images is not None:
            self.x = images.files
            self.description = images.describe()
        else:
            self.split = data.sample("train", recipe.samples, seed=seed)
            self.x = self.split.x
            self.description = "train split"
        if len(self.x) == 0:
            raise EdgepruneError(f"the calibration set is empty: {where} has no training "
                                 "images; give data with a train split")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def num_batches(self) -> int:
        return -(-len(self) // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        from edgeprune.imagefiles import ImageFiles, stream

        if isinstance(self.x, ImageFiles):  # decoded a batch at a time, memory stays bounded
            for x in stream(self.x, np.arange(len(self)), self.batch_size):
                yield self.data.normalize(x)
            return
        for start in range(0, len(self), self.batch_size):
            yield self.data.normalize(self.x[start:start + self.batch_size])


# ---------------------------------------------------------------- TensorRT calibration cache


def write_trt_cache(path: str | Path, amax: dict[str, float], *, tensorrt_version: str | None,
                    algorithm: str = DEFAULT_CACHE_ALGORITHM) -> Path:
    """Write per-tensor activation ranges (amax) as a TensorRT calibration cache."""
    if algorithm not in CACHE_ALGORITHMS:
        raise EdgepruneError(f"unknown TensorRT calibration algorithm {algorithm!r}; choose one "
                             f"of: {', '.join(CACHE_ALGORITHMS)}")
    from edgeprune.tensorrt_caps import TensorRT

    lines = [f"TRT-{TensorRT.parse(tensorrt_version).code}-{algorithm}"]
    for name in sorted(amax):
        # A zero range would give a zero scale, which TensorRT rejects: use the smallest normal.
        scale = max(float(amax[name]) / INT8_MAX, float(np.finfo(np.float32).tiny))
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return write_text(path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class TrtCache:
    version: int
    algorithm: str
    scales: dict[str, float]  # tensor name -> scale (amax / 127)

    def amax(self, name: str) -> float:
        return self.scales[name] * INT8_MAX


def read_trt_cache(path: str | Path) -> TrtCache:
    """Parse a TensorRT calibration cache (ours or one TensorRT wrote)."""
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise EdgepruneError(f"{path} is not a TensorRT calibration cache (no TRT- header)")
    _, version, algorithm = lines[0].split("-", 2)
    scales = {}
    for ln in lines[1:]:
        name, sep, hexval = ln.rpartition(": ")
        if not sep or len(hexval) != 8:
            raise EdgepruneError(f"{path}: malformed calibration cache line {ln!r}")
        scales[name] = struct.unpack(">f", bytes.fromhex(hexval))[0]
    return TrtCache(int(version), algorithm, scales)
