"""Board power on a Jetson, sampled while an engine runs: INA3221 sysfs rails, else tegrastats.

Rail names and files differ by L4T release (jetson.md): R32 exposes mW directly
(``ina3221x/*/iio:device*/in_power*_input`` named by ``rail_name_*``); R35+ exposes mV and mA
(``ina3221/*/hwmon/hwmon*/in*_input``, ``curr*_input``, labels in ``in*_label``), where the sum
channel and channels labelled NC are skipped. The total is the input rail where the board has
one (POM_5V_IN on Nano, VDD_IN on TX2, Xavier NX and the Orin NX/Nano), else the sum of the rails
(AGX Xavier, AGX Orin). We read the files ourselves: jetson-stats (jtop) is AGPL-3.0.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

TOTAL_RAILS = ("POM_5V_IN", "VDD_IN")
_SKIP_LABEL = re.compile(r"^(NC|sum of shunt voltages)$", re.IGNORECASE)
# "VDD_IN 5520mW/5400mW" (R35+) and "POM_5V_IN 3146/3146" (R32); the lookahead keeps
# "RAM 1234/3964MB" and "IRAM 0/252kB" out.
_TEGRASTATS_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")


@dataclass(frozen=True)
class Rail:
    label: str
    power_file: Path | None = None    # mW (R32)
    voltage_file: Path | None = None  # mV (R35+)
    current_file: Path | None = None  # mA (R35+)

    def read_mw(self) -> float:
        if self.power_file is not None:
            return float(self.power_file.read_text().split()[0])
        mv = float(self.voltage_file.read_text().split()[0])
        ma = float(self.current_file.read_text().split()[0])
        return mv * ma / 1000.0


def find_rails(sys_root: str | Path = "/sys") -> list[Rail]:
    """The INA3221 power rails under ``sys_root`` (both sysfs layouts); [] off a Jetson."""
    base = Path(sys_root) / "bus/i2c/drivers"
    rails = []
    for power in sorted(base.glob("ina3221x/*/iio:device*/in_power*_input")):
        n = power.name.removeprefix("in_power").removesuffix("_input")
        name_file = power.parent / f"rail_name_{n}"
        label = name_file.read_text().strip() if name_file.is_file() else f"rail{n}"
        rails.append(Rail(label, power_file=power))
    for volt in sorted(base.glob("ina3221/*/hwmon/hwmon*/in*_input")):
        n = volt.name.removeprefix("in").removesuffix("_input")
        label_file, curr = volt.parent / f"in{n}_label", volt.parent / f"curr{n}_input"
        label = label_file.read_text().strip() if label_file.is_file() else ""
        if label and not _SKIP_LABEL.match(label) and curr.is_file():
            rails.append(Rail(label, voltage_file=volt, current_file=curr))
    return rails


def total_mw(readings: dict[str, float]) -> float:
    """Board power from one set of rail readings: the input rail, else the sum of the rails."""
    for name in TOTAL_RAILS:
        if name in readings:
            return readings[name]
    return sum(readings.values())


def parse_tegrastats(line: str) -> dict[str, float]:
    """Rail -> current mW from one tegrastats line (either format)."""
    return {m.group(1): float(m.group(2)) for m in _TEGRASTATS_RAIL.finditer(line)}


class PowerSampler:
    """Samples board power in a background thread while the ``with`` block runs.

    ``summary()`` gives the mean total power and how it was measured, or says plainly that
    this machine has neither INA3221 rails nor tegrastats.
    """

    def __init__(self, interval_s: float = 0.02, sys_root: str | Path = "/sys",
                 tegrastats: str | None = None):
        self.interval_s = interval_s
        self.rails = find_rails(sys_root)
        self.tegrastats = None if self.rails else (tegrastats or shutil.which("tegrastats"))
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def source(self) -> str | None:
        if self.rails:
            return "ina3221-sysfs"
        return "tegrastats" if self.tegrastats else None

    def __enter__(self) -> Self:
        if self.source:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._proc is not None:
            self._proc.wait(timeout=5)

    def _run(self) -> None:
        if self.rails:
            while not self._stop.is_set():
                self.samples.append((time.perf_counter(),
                                     {r.label: r.read_mw() for r in self.rails}))
                self._stop.wait(self.interval_s)
            return
        interval_ms = max(10, int(self.interval_s * 1000))
        self._proc = subprocess.Popen([self.tegrastats, "--interval", str(interval_ms)],
                                      stdout=subprocess.PIPE, text=True)
        for line in self._proc.stdout:
            if self._stop.is_set():
                break
            rails = parse_tegrastats(line)
            if rails:
                self.samples.append((time.perf_counter(), rails))

    def summary(self) -> dict:
        """Mean board power (W) over the samples, per rail too; ``None`` power when unmeasured."""
        if not self.source:
            return {"power_source": None, "power_w": None,
                    "power_note": "power not measured: this machine has no INA3221 rails in "
                                  "sysfs and no tegrastats (it is not a Jetson)"}
        if not self.samples:
            return {"power_source": self.source, "power_w": None,
                    "power_note": "no power samples were taken: time more iterations"}
        totals = [total_mw(r) for _, r in self.samples]
        labels = self.samples[0][1].keys()
        rails = {k: sum(r.get(k, 0.0) for _, r in self.samples) / len(self.samples) / 1000.0
                 for k in labels}
        total = "input rail" if any(k in rails for k in TOTAL_RAILS) else "sum of rails"
        return {"power_source": self.source, "power_w": sum(totals) / len(totals) / 1000.0,
                "power_samples": len(totals), "rails_w": rails,
                "power_note": f"board power ({total}), static power included"}
