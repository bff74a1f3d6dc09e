"""Input normalization: the checkpoint's, or ``--mean/--std`` for a file that stores none.

Where the mean/std the images are normalized with come from, first that applies:

    checkpoint     the model file stores them: what the model was trained with;
    --mean/--std   the user gave them, and the file stores none;
    the data's     neither: the data set's own (CIFAR-10's constants, or the training split's
                   per-channel statistics; see :mod:`edgeprune.data`).

A file that stores values and a ``--mean/--std`` that differ from them is refused (one of the
two is wrong, and a silent choice would skew accuracy and int8 ranges); the same values are
accepted. The report says which source was used (``model.normalization.source``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgeprune.errors import EdgepruneError

SOURCE_CHECKPOINT = "checkpoint"
SOURCE_USER = "--mean/--std"
TOLERANCE = 1e-6


def parse(value: str | Sequence[float] | None, flag: str) -> list[float] | None:
    """``"0.485,0.456,0.406"`` (or a list of numbers, from a config file) as a list of finite
    floats; None stays None."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = [float(v) for v in parts if not isinstance(v, str) or v.strip()]
    except (TypeError, ValueError):
        raise EdgepruneError(f"{flag} must be numbers separated by commas (one per channel, "
                             f"e.g. 0.485,0.456,0.406), got {value!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise EdgepruneError(f"{flag} must be finite numbers, one per channel (e.g. "
                             f"0.485,0.456,0.406), got {value!r}")
    return out


def parse_pair(mean, std) -> tuple[list[float] | None, list[float] | None]:
    """``--mean`` and ``--std`` as given (strings, lists or None), parsed and checked as a
    pair, before any file is read."""
    mean, std = parse(mean, "--mean"), parse(std, "--std")
    check(mean, std)
    return mean, std


def check(mean: Sequence[float] | None, std: Sequence[float] | None,
          channels: int | None = None) -> None:
    """Both or neither; one value or one per channel; std positive."""
    if mean is None and std is None:
        return
    if mean is None or std is None:
        given, missing = ("--mean", "--std") if std is None else ("--std", "--mean")
        raise EdgepruneError(f"{given} needs {missing} too: give both, one value per channel")
    if len(mean) != len(std):
        raise EdgepruneError(f"--mean has {len(mean)} values but --std has {len(std)}; give one "
                             "per channel (or one for all)")
    if channels is not None and len(mean) not in (1, channels):
        raise EdgepruneError(f"--mean/--std have {len(mean)} values but the model takes "
                             f"{channels}-channel images; give {channels} (or one for all)")
    if min(std) <= 0:
        raise EdgepruneError(f"--std must be positive, got {list(std)}")


def apply_to_model(loaded, mean: Sequence[float] | None, std: Sequence[float] | None) -> str | None:
    """Give ``loaded`` the user's ``--mean/--std`` when its file stores none (so that a pruned
    checkpoint written from it stores them); refuse values that differ from the file's. Returns
    the source of the model's normalization: "checkpoint", "--mean/--std", or None (neither:
    the data's own is used)."""
    info = loaded.info
    channels = info.input_shape[0] if info.input_shape else None
    check(mean, std, channels)
    if info.mean is not None and info.std is not None:
        if mean is not None and not (_same(info.mean, mean, channels)
                                     and _same(info.std, std, channels)):
            raise EdgepruneError(
                f"the model file stores mean {_fmt(info.mean)}, std {_fmt(info.std)} but "
                f"--mean/--std give {_fmt(mean)}, {_fmt(std)}; leave --mean/--std out (the "
                "file's values are what the model was trained with)")
        return SOURCE_CHECKPOINT
    if mean is None:
        return None
    info.mean, info.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    info.normalization_source = SOURCE_USER
    return SOURCE_USER


def _same(a: Sequence[float], b: Sequence[float], channels: int | None) -> bool:
    n = max(len(a), len(b), channels or 1)
    full = lambda v: list(v) * n if len(v) == 1 else list(v)  # noqa: E731
    fa, fb = full(a), full(b)
    return len(fa) == len(fb) and all(abs(x - y) <= TOLERANCE for x, y in zip(fa, fb))


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"
