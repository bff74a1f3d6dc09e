"""Top-1 accuracy of a TensorRT engine on the device, over the build's own test split.

The build exports the test split as ``testset.npz``: the images as uint8 NCHW at the model's
input size, the labels, and the mean and std the model was trained with, so the device
normalises exactly as the host did (``Dataset.normalize``) with numpy alone: no torch, no data
spec, no original files. The engine runs through the TensorRT Python API (8.2 bindings or the
8.5+ tensor API) in engine_accuracy.py, a file that also runs alone under the Jetson's system
Python (where JetPack's TensorRT bindings are), so the build copies it beside build_engine.sh.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeprune.engine.engine_accuracy import load_split, normalize, pad, run, top1
from edgeprune.errors import EdgepruneError

SCRIPT = "engine_accuracy.py"
__all__ = ["ExportedSplit", "engine_accuracy", "export_testset", "pad", "top1"]


def export_testset(data, path: str | Path) -> Path:
    """Write ``data``'s test split (uint8 images, labels, normalisation) to ``path``."""
    from edgeprune.atomic import atomic_path

    test = data.split("test")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, x=test.x.astype(np.uint8), y=test.y.astype(np.int64),
                            mean=np.asarray(data.mean, np.float32),
                            std=np.asarray(data.std, np.float32))
    return Path(path)


class ExportedSplit:
    """The exported split; ``batches`` yields normalised float32 NCHW arrays and labels."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise EdgepruneError(f"{path} does not exist: `edgeprune build` with --data writes "
                                 "it into the build directory; rebuild with a data spec")
        try:
            self.x, self.y, self.mean, self.std = load_split(path)
        except (OSError, ValueError, KeyError) as e:
            raise EdgepruneError(f"{path} is not a test split written by edgeprune ({e}); "
                                 "rebuild") from None
        if self.x.dtype != np.uint8 or self.x.ndim != 4 or len(self.x) != len(self.y):
            raise EdgepruneError(f"{path} does not hold uint8 NCHW images with one label each")

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self), size):
            yield (np.ascontiguousarray(normalize(self.x[start:start + size], self.mean,
                                                  self.std)),
                   self.y[start:start + size])


def engine_accuracy(engine_path: str | Path, testset: str | Path, *,
                    max_batch: int = 64) -> dict:
    """Top-1 of the engine over the test split: {"accuracy", "images", "batch", "tensorrt"}."""
    from edgeprune.engine import device

    if device.tensorrt_version() is None:
        raise EdgepruneError("engine accuracy needs the tensorrt Python package: on the device "
                             "run `python3 engine/engine_accuracy.py engine/model.engine "
                             "testset.npz --out engine/accuracy.json` (docker/README.md)")
    ExportedSplit(testset)  # a clear error for a missing or foreign file
    try:
        return run(engine_path, testset, max_batch)
    except RuntimeError as e:
        raise EdgepruneError(str(e)) from None


def copy_script(folder: str | Path) -> Path:
    """engine_accuracy.py beside build_engine.sh, for the device's system Python."""
    from edgeprune.atomic import write_bytes

    src = Path(__file__).with_name(SCRIPT)
    return write_bytes(Path(folder) / SCRIPT, src.read_bytes())
