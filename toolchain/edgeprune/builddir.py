"""The build directory: every file name a build writes, its lock, and the checks on ``--out``.

One object owns the layout, so that no stage spells a file name of another stage, a rebuild can
clear exactly what an earlier build wrote (and nothing of the user's), and a second build into
the same directory is refused while the first runs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class BuildDir:
    root: Path

    # ------------------------------------------------ file names (the only place they are spelt)
    STATE = "build-state.json"
    RECORD = "build.json"
    PRUNED = "pruned.pt"
    PRUNED_PT2 = "pruned.pt2"  # the same model as a torch.export archive (edgeprune.pt2)
    MSPIC_JSON, MSPIC_PNG, STAGES = "mspic.json", "mspic.png", "stages"
    ORIGINAL_ONNX, MODEL_ONNX = "original.onnx", "model.onnx"
    QUANTIZE_JSON, CALIBRATION_CACHE = "quantize.json", "calibration.cache"
    ENGINE = "engine"
    # the original model at the build's precision, when the build prunes and quantizes
    ORIGINAL_QUANTIZED = "original-quantized"
    TESTSET = "testset.npz"  # the test split for the device's engine accuracy (engine/accuracy.py)
    DEVICE = "device"  # what `edgeprune profile BUILD_DIR` read or measured on the device
    REPORTS = ("report.json", "report.md", "report.html")
    WORK = ".work"  # scratch files of a running build (removed when it ends)
    # What a quantize stage may write (see edgeprune.quantize).
    QUANTIZED = ("model.fp32.onnx", "model.fp16.onnx", "model.int8.tensorrt.onnx",
                 "model.int8.ort-cpu.onnx", "model.binary.onnx", "model.binary.packed",
                 "model.shared.onnx", "model.shared.packed")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def state(self) -> Path:
        return self.root / self.STATE

    @property
    def work(self) -> Path:
        return self.root / self.WORK

    @property
    def engine(self) -> Path:
        return self.root / self.ENGINE

    def rel(self, path: str | Path) -> str:
        """``path`` relative to the build directory when inside it (what state and reports
        record), else absolute."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def resolve(self, name: str) -> Path:
        return Path(name) if Path(name).is_absolute() else self.root / name

    def written_names(self) -> list[str]:
        """Every file and folder a build writes here (what a fresh build clears first)."""
        return [self.STATE, self.RECORD, self.PRUNED, self.PRUNED_PT2, self.MSPIC_JSON,
                self.MSPIC_PNG, self.STAGES, self.ORIGINAL_ONNX, self.MODEL_ONNX,
                self.QUANTIZE_JSON, self.CALIBRATION_CACHE, self.ENGINE, self.ORIGINAL_QUANTIZED,
                self.TESTSET,
                self.DEVICE, self.WORK,
                *self.QUANTIZED, *self.REPORTS]

    # ------------------------------------------------ checks and lifecycle

    def check_usable(self, flag: str = "--out") -> None:
        """A one-line error now, before any work, if the build cannot write here."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise EdgepruneError(f"{flag} {root} is an existing file; give a directory")
        if root.is_dir():
            if not os.access(root, os.W_OK | os.X_OK):
                raise EdgepruneError(f"{flag} {root} is not writable; pick another directory")
            return
        parent = _existing_parent(root)
        if not parent.is_dir():
            raise EdgepruneError(f"{flag} {root}: {parent} is a file, not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise EdgepruneError(f"{flag} {root} cannot be created: {parent} is not writable")

    def clear(self) -> None:
        """Remove what an earlier build wrote here (only the names a build writes), so that a
        new build never shows an old run's files."""
        for name in self.written_names():
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory while a build writes into it; a second build
        into the same directory is refused at once instead of mixing its files in."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EdgepruneError(f"another edgeprune run is writing to {self.root}; wait for "
                                     "it to finish or give another --out") from None
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def remove_work(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")
