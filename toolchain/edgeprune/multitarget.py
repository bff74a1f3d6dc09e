"""``build --target A,B``: prune once, then export, quantize and profile for each target.

The first target's build runs the whole pipeline into ``OUT/A/``; every other target's build
into ``OUT/B/`` ... takes the first one's pruned checkpoint (``BuildConfig.reuse_pruning``:
pruning depends on the model, the data and the pruning options, never on the target), and runs
the rest for its own target. Then the builds' reports are merged into one comparison in
``OUT/report.json``, ``report.md`` and ``report.html`` (as ``edgeprune report`` merges them).

Every target name, and each target's precision rules, are checked before any work: an unknown
name is a one-line error listing the known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgeprune.builddir import BuildDir
from edgeprune.errors import EdgepruneError


def split_targets(text: str | None) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``, each a known target, none twice (one-line errors)."""
    from edgeprune.targets import list_targets, load_target

    names = [t.strip() for t in (text or "").split(",")]
    if not all(names):
        raise EdgepruneError(f"--target {text!r} has an empty name; give names separated by "
                             f"commas, e.g. jetson-nano,jetson-xavier-nx (known: "
                             f"{', '.join(list_targets())})")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise EdgepruneError(f"--target {text!r} names {', '.join(twice)} twice; give each "
                             "target once")
    for name in names:
        load_target(name)  # an unknown name: one line listing the known ones
    return names


def is_multi(target: str | None) -> bool:
    return isinstance(target, str) and "," in target


@dataclass
class MultiResult:
    """The per-target builds (target name -> its final BuildState) and the merged report."""

    out: Path
    states: dict
    report: dict

    def build_dir(self, target: str) -> Path:
        return self.out / target


def target_configs(cfg, names: list[str]) -> list:
    """One BuildConfig per target, into OUT/<target>; the second and later reuse the first's
    pruning (unless the build does not prune)."""
    first = Path(cfg.out) / names[0]
    return [replace(cfg, target=name, out=Path(cfg.out) / name,
                    reuse_pruning=(cfg.reuse_pruning if i == 0 or cfg.method == "none"
                                   else first))
            for i, name in enumerate(names)]


def run_targets(cfg, *, resume: bool = False, log: Callable[[str], None] | None = None,
                progress=None, on_stage: Callable[[str], None] | None = None) -> MultiResult:
    """Build ``cfg`` for each target of ``cfg.target`` ("A,B"), pruning once; merge the
    reports into ``cfg.out``."""
    from edgeprune.build import prepare, run_build
    from edgeprune.report import merge_reports, write_reports

    if cfg.target_file is not None:
        raise EdgepruneError("give --target A,B or --target-file PATH, not both")
    names = split_targets(cfg.target)
    BuildDir(cfg.out).check_usable()
    configs = target_configs(cfg, names)
    for c in configs:  # every target's checks (precision, data, ...) before any work; the
        # first build's pruning, which the others reuse, is checked when it exists (run_build)
        prepare(replace(c, reuse_pruning=None) if c.reuse_pruning == configs[0].out else c)
    log = log or _logger()
    states = {}
    for c in configs:
        log(f"— target {c.target} → {c.out}")
        states[c.target] = run_build(c, resume=resume, log=log, progress=progress,
                                     on_stage=on_stage)
    dirs = tuple(c.out for c in configs)
    merged = merge_reports(list(dirs))
    merged["sources"] = [c.target for c in configs]  # relative: OUT/<target>
    write_reports(merged, Path(cfg.out), plot_dirs=dirs)
    log(f"wrote the comparison of {', '.join(names)}: {Path(cfg.out) / 'report.html'}")
    return MultiResult(Path(cfg.out), states, merged)


def _logger() -> Callable[[str], None]:
    import logging

    return logging.getLogger("edgeprune").info
