"""``edgeprune targets``: the devices edgeprune knows."""

from __future__ import annotations

import typer
from rich.table import Table

from edgeprune.cli.app import command, console


@command("targets")
def targets_cmd(
    name: str = typer.Argument(None, help="Show one target in full instead of the list."),
) -> None:
    """List the device targets (targets/*.toml), or show one."""
    from edgeprune.targets import list_targets, load_target

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
