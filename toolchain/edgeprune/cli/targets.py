"""``edgeprune targets``: the devices edgeprune knows."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgeprune.cli.app import command, console


@command("targets")
def targets_cmd(
    name: str = typer.Argument(None, help="Show one target in full instead of the list; or "
                               "`fit TARGET PROFILES...`."),
    rest: list[str] = typer.Argument(None, help="With `fit`: the target, then build "
                                     "directories measured on it."),
    out: Path = typer.Option(None, "--out", help="With `fit`: the refitted target file to "
                             "write (use it with --target-file)."),
) -> None:
    """List the device targets (targets/*.toml), or show one; `targets fit TARGET PROFILES...
    --out FILE` refits a target's latency factors from per-layer device profiles."""
    from edgeprune.targets import list_targets, load_target

    if name == "fit":
        return _fit(rest or [], out)
    if rest or out is not None:
        from edgeprune.errors import EdgepruneError

        raise EdgepruneError(f"`edgeprune targets {name or ''}` takes no more arguments or "
                             "--out; did you mean "
                             "`edgeprune targets fit TARGET PROFILES... --out FILE`?")
    if name:
        t = load_target(name)
        console.print(f"[bold]{t.name}[/]: {t.display_name}  ({t.path})")
        for section, values in t.raw.items():
            if isinstance(values, dict):
                console.print(f"[bold]{section}[/]")
                for k, v in values.items():
                    console.print(f"  {k} = {v}")
            elif section not in ("name", "display_name"):
                console.print(f"{section} = {values}")
        return
    table = Table(title="edgeprune targets (`edgeprune targets NAME` shows one in full)")
    for col in ("name", "GPU", "CC", "fp16 TFLOPS", "int8 TOPS", "memory", "GB/s", "TensorRT",
                "fast precisions"):
        table.add_column(col, no_wrap=col == "name")
    for n in list_targets():
        t = load_target(n)
        gpu, mem, sw, peak = (t.section(s) for s in ("gpu", "memory", "software", "peak"))
        table.add_row(n, gpu.get("architecture", "CPU"), str(gpu.get("compute_capability", "-")),
                      str(peak.get("fp16_tflops") or "-"), str(peak.get("int8_tops") or "-"),
                      f"{mem['size_gb']} GB" if mem.get("size_gb") else "-",
                      str(mem.get("bandwidth_gbps", "-")), sw.get("tensorrt", "-"),
                      ", ".join(t.fast_precisions))
    console.print(table)


def _fit(args: list[str], out: Path | None) -> None:
    from edgeprune.errors import EdgepruneError
    from edgeprune.profile.fit import fit_target
    from edgeprune.targets import load_target

    if len(args) < 2 or out is None:
        raise EdgepruneError("usage: edgeprune targets fit TARGET BUILD_DIR... --out FILE "
                             "(build directories measured on the device with `edgeprune "
                             "profile BUILD_DIR`)")
    r = fit_target(load_target(args[0]), [Path(a) for a in args[1:]], out)
    effs = ", ".join(f"{p} {e:.3f}" for p, e in r["efficiency"].items())
    console.print(f"fitted on {r['samples']} device layers: efficiency {effs}; launch overhead "
                  f"{r['launch_overhead_us']:.2f} us; rmse {r['rmse_ms']:.4f} ms per layer "
                  f"(was {r['rmse_ms_before']:.4f})", highlight=False, markup=False)
    console.print(f"wrote {out}: use it with --target-file", highlight=False, markup=False)
