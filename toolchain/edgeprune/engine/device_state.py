"""The power mode and clocks a Jetson ran at: recorded beside every figure measured on it.

- ``nvpmodel -q`` prints ``NV Power Mode: <name>`` and, on the next line, the mode's number
  (one more line, ``NV Fan Mode:``, on some releases); no root needed.
- GPU clock: the GPU's devfreq node (``/sys/class/devfreq/<gpu>/{cur,min,max}_freq``, in Hz; the
  node is 57000000.gpu on Nano, 17000000.gp10b on TX2, 17000000.gv11b on Xavier,
  17000000.ga10b or 17000000.gpu on Orin).
- EMC (memory) clock: ``/sys/kernel/debug/bpmp/debug/clk/emc/rate`` (Xavier, Orin) or
  ``/sys/kernel/debug/clk/emc/clk_rate`` (Nano, TX2), in Hz; debugfs, readable by root only.
- jetson_clocks pins each devfreq node's minimum to its maximum: "on" when the GPU's min_freq
  equals its max_freq (and the stock governor would otherwise let it drop), "off" otherwise.

The same facts come from a device-state.txt that build_engine.sh writes (``nvpmodel -q`` then
``grep -H . /sys/class/devfreq/*/*_freq``), for devices without edgeprune.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

_GPU_NODE = re.compile(r"(gpu|gp10b|gv11b|ga10b|gb10b)$")
_EMC_FILES = ("kernel/debug/bpmp/debug/clk/emc/rate", "kernel/debug/clk/emc/clk_rate")
_MODE = re.compile(r"NV Power Mode:\s*(\S.*?)\s*$", re.MULTILINE)


def parse_nvpmodel(text: str) -> dict:
    """{"mode": "MAXN", "id": 0} from ``nvpmodel -q`` output; {} when it holds no mode."""
    m = _MODE.search(text)
    if not m:
        return {}
    rest = text[m.end():].split()
    return {"mode": m.group(1), "id": int(rest[0]) if rest and rest[0].isdigit() else None}


def query_nvpmodel(exe: str | None = None) -> dict:
    exe = exe or shutil.which("nvpmodel")
    if not exe:
        return {}
    try:
        proc = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_nvpmodel(proc.stdout + proc.stderr)


def _mhz(hz: str | None) -> float | None:
    try:
        return round(int(hz.strip()) / 1e6, 1)
    except (AttributeError, ValueError):
        return None


def gpu_clock(freqs: dict[str, dict[str, str]]) -> dict:
    """The GPU's devfreq node among ``{node: {"cur_freq": Hz, ...}}``: MHz and jetson_clocks."""
    node = next((n for n in sorted(freqs) if _GPU_NODE.search(n)), None)
    if node is None:
        return {"gpu_node": None, "gpu_mhz": None, "jetson_clocks": None}
    f = freqs[node]
    cur, lo, hi = (_mhz(f.get(k)) for k in ("cur_freq", "min_freq", "max_freq"))
    return {"gpu_node": node, "gpu_mhz": cur, "gpu_min_mhz": lo, "gpu_max_mhz": hi,
            "jetson_clocks": None if lo is None or hi is None else lo == hi}


def read_devfreq(sys_root: str | Path = "/sys") -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for f in sorted(Path(sys_root).glob("class/devfreq/*/*_freq")):
        try:
            out.setdefault(f.parent.name, {})[f.name] = f.read_text().strip()
        except OSError:
            continue
    return out


def read_emc_mhz(sys_root: str | Path = "/sys") -> float | None:
    for rel in _EMC_FILES:
        try:
            return _mhz((Path(sys_root) / rel).read_text())
        except OSError:
            continue
    return None


def read_device_state(sys_root: str | Path = "/sys", nvpmodel: str | None = None) -> dict:
    """This machine's power mode, GPU and EMC clocks, jetson_clocks; None where unreadable."""
    state = {"source": "edgeprune", "nvpmodel": query_nvpmodel(nvpmodel) or None,
             **gpu_clock(read_devfreq(sys_root)), "emc_mhz": read_emc_mhz(sys_root)}
    return _with_note(state)


def parse_state_file(text: str) -> dict:
    """The device state from build_engine.sh's device-state.txt."""
    freqs: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"^/sys/class/devfreq/([^/\s]+)/(\w+_freq):(\d+)\s*$", text,
                         re.MULTILINE):
        freqs.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
    state = {"source": "build_engine.sh", "nvpmodel": parse_nvpmodel(text) or None,
             **gpu_clock(freqs), "emc_mhz": None}
    return _with_note(state)


def _with_note(state: dict) -> dict:
    missing = [what for what, key in (("power mode (no nvpmodel)", "nvpmodel"),
                                      ("GPU clock (no GPU devfreq node)", "gpu_mhz"),
                                      ("EMC clock (debugfs needs root)", "emc_mhz"))
               if state.get(key) is None]
    if missing:
        state["note"] = "not read: " + ", ".join(missing)
    return state


def describe(state: dict | None) -> str:
    """One line for the report: 'nvpmodel MAXN (0), GPU 921.6 MHz (max 921.6), jetson_clocks
    on, EMC 1600 MHz'."""
    if not state:
        return "device state not recorded"
    parts = []
    mode = state.get("nvpmodel") or {}
    if mode:
        parts.append(f"nvpmodel {mode.get('mode')}"
                     + (f" ({mode['id']})" if mode.get("id") is not None else ""))
    if state.get("gpu_mhz") is not None:
        parts.append(f"GPU {state['gpu_mhz']:g} MHz (max {state.get('gpu_max_mhz')})")
    if state.get("jetson_clocks") is not None:
        parts.append(f"jetson_clocks {'on' if state['jetson_clocks'] else 'off'}")
    if state.get("emc_mhz") is not None:
        parts.append(f"EMC {state['emc_mhz']:g} MHz")
    return ", ".join(parts) or "device state not readable here"
