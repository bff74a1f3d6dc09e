"""Power rails (both INA3221 sysfs layouts, tegrastats lines), the sampler, and the engine
profile's summary. The sysfs trees are written as real files in the layouts of jetson.md."""

import json
import time

import pytest
from edgeprune.engine.power import PowerSampler, find_rails, parse_tegrastats, total_mw
from edgeprune.engine.runtime import parse_trtexec_times, profile_engine, summarize
from edgeprune.errors import EdgepruneError


def r32_tree(root, rails):
    """L4T R32 (Nano): iio in_powerN_input (mW) named by rail_name_N."""
    d = root / "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    d.mkdir(parents=True)
    for n, (name, mw) in enumerate(rails.items()):
        (d / f"rail_name_{n}").write_text(name + "\n")
        (d / f"in_power{n}_input").write_text(f"{mw}\n")


def r35_tree(root, rails):
    """L4T R35+ (Orin): hwmon inN_input (mV), currN_input (mA), inN_label; a sum channel."""
    d = root / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    d.mkdir(parents=True)
    for n, (name, (mv, ma)) in enumerate(rails.items(), start=1):
        (d / f"in{n}_label").write_text(name + "\n")
        (d / f"in{n}_input").write_text(f"{mv}\n")
        (d / f"curr{n}_input").write_text(f"{ma}\n")
    (d / "in7_label").write_text("sum of shunt voltages\n")
    (d / "in7_input").write_text("40\n")


def test_r32_rails_use_the_input_rail(tmp_path):
    r32_tree(tmp_path, {"POM_5V_IN": 3146, "POM_5V_GPU": 120, "POM_5V_CPU": 605})
    rails = find_rails(tmp_path)
    assert [r.label for r in rails] == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
    assert total_mw({r.label: r.read_mw() for r in rails}) == 3146


def test_r35_rails_multiply_volts_and_amps_and_skip_the_sum(tmp_path):
    r35_tree(tmp_path, {"VDD_IN": (5000, 1100), "VDD_CPU_GPU_CV": (5000, 300),
                        "NC": (0, 0)})
    rails = find_rails(tmp_path)
    readings = {r.label: r.read_mw() for r in rails}
    assert readings == {"VDD_IN": 5500.0, "VDD_CPU_GPU_CV": 1500.0}
    assert total_mw(readings) == 5500.0
    assert total_mw({"GPU": 1000.0, "CPU": 500.0, "SOC": 250.0}) == 1750.0  # AGX: no input rail


def test_tegrastats_lines():
    nano = ("RAM 1234/3964MB (lfb 5x4MB) SWAP 0/1982MB IRAM 0/252kB CPU [5%@1479,off,off,3%@1479] "
            "EMC_FREQ 0% GR3D_FREQ 0% PLL@23C CPU@26C POM_5V_IN 3146/3146 POM_5V_GPU 0/0 "
            "POM_5V_CPU 605/605")
    assert parse_tegrastats(nano) == {"POM_5V_IN": 3146.0, "POM_5V_GPU": 0.0, "POM_5V_CPU": 605.0}
    orin = ("RAM 2871/7620MB CPU [1%@729] GR3D_FREQ 0% cpu@47.5C VDD_IN 5520mW/5400mW "
            "VDD_CPU_GPU_CV 1234mW/1200mW VDD_SOC 1435mW/1435mW")
    assert parse_tegrastats(orin) == {"VDD_IN": 5520.0, "VDD_CPU_GPU_CV": 1234.0,
                                      "VDD_SOC": 1435.0}


def test_sampler_averages_the_rails_while_running(tmp_path):
    r35_tree(tmp_path, {"VDD_IN": (5000, 1000), "VDD_SOC": (5000, 200)})
    with PowerSampler(interval_s=0.005, sys_root=tmp_path) as sampler:
        time.sleep(0.1)
    summary = sampler.summary()
    assert summary["power_source"] == "ina3221-sysfs" and summary["power_samples"] >= 3
    assert summary["power_w"] == pytest.approx(5.0) and "input rail" in summary["power_note"]


def test_no_rails_says_so_plainly(tmp_path):
    with PowerSampler(sys_root=tmp_path, tegrastats=None) as sampler:
        pass
    if sampler.source is None:  # a development machine: no rails, no tegrastats
        summary = sampler.summary()
        assert summary["power_w"] is None and "power not measured" in summary["power_note"]


def test_summary_gives_energy_per_inference(tmp_path):
    power = {"power_source": "ina3221-sysfs", "power_w": 5.0}
    out = summarize(tmp_path / "m.engine", [1.0, 2.0, 3.0, 4.0], 0.01, power, "trtexec")
    assert out["latency_ms"]["median"] == 2.5 and out["latency_ms"]["runs"] == 4
    assert out["energy_mj"] == pytest.approx(5.0 * 0.01 / 4 * 1e3)
    none = summarize(tmp_path / "m.engine", [1.0], 0.001, {"power_w": None}, "trtexec")
    assert "energy_mj" not in none


def test_trtexec_export_times():
    records = [{"startComputeMs": 10.0 + i, "endComputeMs": 10.5 + i, "computeMs": 0.5,
                "latencyMs": 0.5} for i in range(5)]
    times, wall = parse_trtexec_times(json.dumps(records))
    assert times == [0.5] * 5 and wall == pytest.approx(4.5e-3)


def test_profile_engine_without_tensorrt_is_a_clear_error(tmp_path):
    pytest.importorskip("numpy")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(EdgepruneError, match="neither the tensorrt Python package nor trtexec"):
        profile_engine(engine, warmup_s=0.0, iterations=1, trtexec=None)
    with pytest.raises(EdgepruneError, match="does not exist"):
        profile_engine(tmp_path / "missing.engine")
