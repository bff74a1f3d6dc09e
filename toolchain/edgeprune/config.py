"""Options from a config file or the command line, checked before any work.

Every value is checked against the type of its dataclass field (``stages = "two"`` for an int is
an error naming the key and the type, never a crash mid-build), and numbers against the ranges
below. Each check raises EdgepruneError with one line that names the option as the user wrote it
(``--seed`` on the command line, ``[prune] stages`` in a file).
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields, replace
from pathlib import Path

from edgeprune.errors import EdgepruneError

# name -> (lowest, highest, lowest allowed?, highest allowed?); None = unbounded.
RANGES: dict[str, tuple] = {
    "seed": (0, None, True, True),
    "fps": (0, None, False, True),
    "epochs": (1, None, True, True),
    "warmup_epochs": (0, None, True, True),
    "stages": (1, None, True, True),
    "finetune_epochs": (0, None, True, True),
    "binary_epochs": (0, None, True, True),
    "samples": (2, None, True, True),
    "calibration_samples": (1, None, True, True),
    "batch_size": (1, None, True, True),
    "binary_batch_size": (1, None, True, True),
    "max_error_increase": (0, 1, True, True),
    "target_reduction": (0, 1, False, True),
    "resolutions": (0, 1, False, True),
    "sigma2": (0, None, False, True),
    "lr": (0, None, False, True),
    "binary_lr": (0, None, False, True),
    "percentile": (50, 100, False, True),
    "dla_core": (0, None, True, True),
    "batch": (1, None, True, True),
}


def check_range(name: str, value, label: str | None = None) -> None:
    """Raise if ``value`` (or any number in it, for per-stage lists) is outside ``name``'s
    range. ``label`` is how the user wrote the option (default ``--name``)."""
    if name not in RANGES or value is None:
        return
    lo, hi, lo_ok, hi_ok = RANGES[name]
    for v in _numbers(value):
        low = lo is not None and (v < lo or (v == lo and not lo_ok))
        high = hi is not None and (v > hi or (v == hi and not hi_ok))
        if low or high:
            label = label or "--" + name.replace("_", "-")
            raise EdgepruneError(f"{label} must be {_describe(lo, hi, lo_ok, hi_ok)}, got {v}")


def _numbers(value) -> list:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def _describe(lo, hi, lo_ok, hi_ok) -> str:
    if hi is None:
        return f"{'at least' if lo_ok else 'greater than'} {lo}"
    return f"in {'[' if lo_ok else '('}{lo}, {hi}{']' if hi_ok else ')'}"


# ---------------------------------------------------------------- types


def check_type(value, annotation, label: str) -> None:
    """Raise naming ``label`` when ``value`` does not fit the field type ``annotation``."""
    if not _fits(value, annotation):
        raise EdgepruneError(f"{label} must be {_type_name(annotation)}, got {value!r} "
                             f"({_kind(value)}); fix the config file")


def _fits(value, tp) -> bool:
    if tp is typing.Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is Path:
        return isinstance(value, str | Path)
    if tp is list or origin is list:
        return isinstance(value, list)
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(parts)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            Path: "a path (a string)", list: "a list", dict: "a table"}.get(
        tp, "a list" if typing.get_origin(tp) is list else getattr(tp, "__name__", str(tp)))


def _kind(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def field_types(cls) -> dict[str, object]:
    return typing.get_type_hints(cls)


def checked_overrides(config, overrides: dict, section: str):
    """``config`` (a dataclass) with ``overrides`` applied, every name and value checked first.
    ``section`` names where they came from in messages, e.g. "[prune]"."""
    types_ = field_types(type(config))
    known = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise EdgepruneError(f"{section} has no option {', '.join(unknown)}; its options are: "
                             f"{', '.join(sorted(known))}")
    for key, value in overrides.items():
        label = f"{section} {key}".strip()
        check_type(value, types_[key], label)
        check_range(key, value, label)
    return replace(config, **overrides)
