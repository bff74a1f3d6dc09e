"""Images read from files on demand, for ``imagefolder:`` data of any size and format.

An :class:`ImageFiles` stands where a split's uint8 NCHW array would: it has ``shape``,
``dtype``, ``ndim`` and ``len``; indexing it gives another ImageFiles (no pixels read), and
``np.asarray``/``astype`` decode. So a data set of many JPEGs holds only file names; batches
are decoded as they are used (by DataLoader workers, see :func:`stream`), and only what a stage
samples on purpose (the MI sample) is held in memory.

Each image is converted to RGB (grayscale, palette, RGBA and CMYK alike), resized so that its
shorter side is ``size × 256/224`` (the ImageNet evaluation recipe) and centre-cropped to
``size``; an image that already has the size is taken as it is.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeprune.errors import EdgepruneError

RESIZE_RATIO = 256 / 224


def image_extensions() -> set[str]:
    """Every file extension Pillow can open (.png, .jpg, .jpeg, .webp, .bmp, .tif, ...)."""
    from PIL import Image

    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def check_image(path: Path) -> tuple[int, int]:
    """Open and verify a file without keeping its pixels; its (width, height). A file Pillow
    cannot read is a one-line error naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()  # checks the structure (e.g. PNG chunk CRCs) without decoding
        return size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None


def _unreadable(path: Path, e: BaseException) -> EdgepruneError:
    line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return EdgepruneError(f"{path} is not a readable image ({line}); replace or delete it")


def read_image(path: Path, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """One image as uint8 (C, H, W) at ``size`` = (H, W); C = 3 (RGB) or 1 (grayscale)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            # L, P, RGBA, CMYK, I;16: one channel layout for the model
            im = im.convert("L" if channels == 1 else "RGB")
            if (im.height, im.width) != tuple(size):
                im = _resize_crop(im, size)
            return np.asarray(im, np.uint8).reshape(im.height, im.width, -1) \
                .transpose(2, 0, 1).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None


def _resize_crop(im, size: tuple[int, int]):
    from PIL import Image

    h, w = size
    scale = round(min(h, w) * RESIZE_RATIO) / min(im.height, im.width)
    new = (max(w, round(im.width * scale)), max(h, round(im.height * scale)))
    im = im.resize(new, Image.BILINEAR)
    left, top = (im.width - w) // 2, (im.height - h) // 2
    return im.crop((left, top, left + w, top + h))


class ImageFiles:
    """Image files as a lazy uint8 (N, 3, H, W) array (see the module's docstring)."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: list[Path], size: tuple[int, int], channels: int = 3):
        self.paths = list(paths)
        self.size = (int(size[0]), int(size[1]))
        self.channels = 1 if channels == 1 else 3

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.channels, *self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> ImageFiles:
        picked = np.arange(len(self.paths))[index]
        return ImageFiles([self.paths[i] for i in np.atleast_1d(picked)], self.size,
                          self.channels)

    def resized(self, size: tuple[int, int]) -> ImageFiles:
        return ImageFiles(self.paths, size, self.channels)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, np.uint8)
        for i, p in enumerate(self.paths):
            out[i] = read_image(p, self.size, self.channels)
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def fingerprint(self, h) -> None:
        """Feed the files' names and content to the hash ``h``, a file at a time."""
        h.update(str(self.size).encode())
        if self.channels != 3:
            h.update(b" grayscale")
        for p in self.paths:
            h.update(str(p).encode())
            with open(p, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())


def find_images(root: Path) -> tuple[list[Path], int]:
    """Every image file under ``root``, flat or nested, sorted; and how many entries were
    skipped. Hidden files and folders (``.DS_Store``, ``._x.jpg``, ``.git``) are skipped, and so
    is every symlink that leads out of ``root`` (a symlinked folder is never entered), so the
    files read are ``root``'s own whatever the names or links in it."""
    base = Path(root).resolve()
    extensions = image_extensions()
    found, skipped = [], 0
    for folder, dirs, files in os.walk(base, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in extensions:
                continue
            real = path.resolve()
            if not real.is_relative_to(base) or not real.is_file():
                skipped += 1
                continue
            found.append(path)
    return sorted(found), skipped


def workers() -> int:
    """DataLoader workers: the cores but one (decoding runs beside the model), at most 8;
    ``EDGEPRUNE_WORKERS`` overrides (0: decode in the main process)."""
    given = os.environ.get("EDGEPRUNE_WORKERS")
    if given is not None and given.isdigit():
        return int(given)
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def stream(files: ImageFiles, order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """The images of ``files`` in ``order``, decoded by DataLoader workers, one uint8 batch at
    a time (a few batches ahead at most: memory stays bounded whatever the data set's size)."""
    import torch
    from torch.utils.data import DataLoader

    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    n = workers() if len(batches) > 1 else 0
    loader = DataLoader(_Decode(files), batch_size=None, sampler=batches, num_workers=n,
                        prefetch_factor=2 if n else None)
    for item in loader:
        if isinstance(item, str):  # the worker's one-line error, raised here (not wrapped)
            raise EdgepruneError(item)
        yield item.numpy() if isinstance(item, torch.Tensor) else item


class _Decode:
    """A map-style data set: a batch of indices -> its decoded images."""

    def __init__(self, files: ImageFiles):
        self.files = files

    def __getitem__(self, idx) -> np.ndarray | str:
        try:
            return np.asarray(self.files[idx])
        except EdgepruneError as e:
            return str(e)

    def __len__(self) -> int:
        return len(self.files)
