"""The device loop on a real build: build_engine.sh runs (stand-in docker, trtexec and nvpmodel on
PATH, writing trtexec's formats), `edgeprune profile BUILD_DIR --trtexec-dir/--engine` fills the
build's report, the test split travels as testset.npz, and `targets fit` refits the factors."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from edgeprune.build import BuildConfig, run_build
from edgeprune.cli import app
from edgeprune.data import load_dataset
from edgeprune.engine.accuracy import ExportedSplit, top1
from edgeprune.engine.device_state import (
    describe,
    parse_nvpmodel,
    parse_state_file,
    read_device_state,
)
from edgeprune.engine.measure import device_record
from edgeprune.engine.plan import LAYERS_NAME, PROFILE_NAME, TIMES_NAME
from edgeprune.report import read_report
from typer.testing import CliRunner

FIXTURES = Path(__file__).parent / "fixtures" / "trtexec"
NVPMODEL = "#!/bin/sh\nprintf 'NV Fan Mode:quiet\\nNV Power Mode: MAXN\\n0\\n'\n"


def _stand_in(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(body)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory, resnet20_digits_path) -> Path:
    out = tmp_path_factory.mktemp("device") / "build"
    run_build(BuildConfig(target="jetson-orin-nano", model=resnet20_digits_path, data="digits",
                          out=out, method="none", precision="fp16", measure_host=False),
              log=lambda m: None)
    return out


def _exports(report: dict, folder: Path, factor: float = 2.0) -> Path:
    """trtexec's three files, TensorRT 10 layout, for the build's own graph: each Conv/Gemm
    fused with the nodes after it, measured at ``factor`` x the estimate, plus a reformat."""
    layers = report["variants"][-1]["layers"]
    groups: list[list[dict]] = []
    for lay in layers:
        if lay["op_type"] in ("Conv", "Gemm") or not groups:
            groups.append([])
        groups[-1].append(lay)
    names = [" + ".join(x["name"] for x in g) for g in groups]
    ms = [factor * sum(x["latency_estimated_ms"] for x in g) for g in groups]
    profile = [{"count": 10}, {"name": "Reformatting CopyNode for Input Tensor 0 to " + names[0],
                               "timeMs": 0.2, "averageMs": 0.02, "medianMs": 0.02,
                               "percentage": 1.0}]
    profile += [{"name": n, "timeMs": 10 * t, "averageMs": t, "medianMs": t, "percentage": 1.0}
                for n, t in zip(names, ms)]
    info = {"Layers": [{"Name": n, "LayerType": "CaskConvolution",
                        "Metadata": "\x1e".join(f"[ONNX Layer: {x['name']}]" for x in g)}
                       for n, g in zip(names, groups)], "Bindings": ["input", "output"]}
    total = sum(ms)
    times = [{"startComputeMs": 2000.0 + i, "endComputeMs": 2000.0 + i + total,
              "computeMs": total, "latencyMs": total + 0.01 * i} for i in range(5)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROFILE_NAME).write_text(json.dumps(profile))
    (folder / LAYERS_NAME).write_text(json.dumps(info))
    (folder / TIMES_NAME).write_text(json.dumps(times))
    return folder


def test_nvpmodel_and_clocks_from_sysfs(tmp_path, monkeypatch):
    sys_root = tmp_path / "sys"
    gpu = sys_root / "class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    for name, hz in (("cur_freq", 1300500000), ("min_freq", 1300500000),
                     ("max_freq", 1300500000)):
        (gpu / name).write_text(f"{hz}\n")
    emc = sys_root / "kernel/debug/bpmp/debug/clk/emc"
    emc.mkdir(parents=True)
    (emc / "rate").write_text("3199000000\n")
    monkeypatch.setenv("PATH", f"{_stand_in(tmp_path / 'bin', 'nvpmodel', NVPMODEL).parent}:"
                               f"{os.environ['PATH']}")
    state = read_device_state(sys_root)
    assert state["nvpmodel"] == {"mode": "MAXN", "id": 0}
    assert state["gpu_mhz"] == 1300.5 and state["jetson_clocks"] is True
    assert state["emc_mhz"] == 3199.0 and "note" not in state
    assert describe(state) == ("nvpmodel MAXN (0), GPU 1300.5 MHz (max 1300.5), jetson_clocks "
                               "on, EMC 3199 MHz")
    (gpu / "min_freq").write_text("306000000\n")
    assert read_device_state(sys_root)["jetson_clocks"] is False


def test_off_a_jetson_the_state_says_what_it_could_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvpmodel
    state = read_device_state(tmp_path)
    assert state["nvpmodel"] is None and state["gpu_mhz"] is None
    assert "power mode" in state["note"] and "EMC clock" in state["note"]


def test_state_files_the_build_script_writes():
    nano = parse_state_file((FIXTURES / "8.2" / "device-state.txt").read_text())
    assert nano["nvpmodel"] == {"mode": "MAXN", "id": 0}
    assert nano["gpu_node"] == "57000000.gpu" and nano["gpu_mhz"] == 921.6
    assert nano["jetson_clocks"] is True
    orin = parse_state_file((FIXTURES / "10.3" / "device-state.txt").read_text())
    assert orin["nvpmodel"]["mode"] == "15W" and orin["gpu_max_mhz"] == 624.8
    assert orin["jetson_clocks"] is False
    assert parse_nvpmodel("nvpmodel: command not found") == {}


def test_testset_is_preprocessed_as_on_the_host(build_dir):
    """The device's numpy normalisation gives the host's ONNX Runtime accuracy exactly."""
    import onnxruntime as ort

    report = read_report(build_dir)
    data = ExportedSplit(build_dir / "testset.npz")
    sess = ort.InferenceSession(str(build_dir / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    correct = sum(top1(sess.run(None, {name: x})[0], y) for x, y in data.batches(1))
    assert correct / len(data) == pytest.approx(report["variants"][0]["accuracy"])
    assert data.x.dtype == np.uint8 and len(data) == len(load_dataset("digits").test)


def test_build_script_then_ingest_fills_the_report(build_dir, tmp_path):
    """A device without edgeprune: build_engine.sh (stand-in docker running 'trtexec') writes
    the engine, trtexec's files and the device state; the host reads them back."""
    report = read_report(build_dir)
    exports = _exports(report, tmp_path / "exports")
    docker = ('#!/usr/bin/env bash\nset -e\ntouch engine/model.engine\n'
              f'cp {exports}/*.json engine/\necho "[I] Duration: 0s (+ 2000ms warm up)"\n'
              'echo "[I] TensorRT version: 10.3.0"\n')
    bin_dir = tmp_path / "bin"
    _stand_in(bin_dir, "docker", docker)
    _stand_in(bin_dir, "nvpmodel", NVPMODEL)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run = subprocess.run([str(build_dir / "engine" / "build_engine.sh")], env=env,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "NV Power Mode: MAXN" in (build_dir / "engine" / "device-state.txt").read_text()

    r = CliRunner().invoke(app, ["profile", str(build_dir), "--trtexec-dir",
                                 str(build_dir / "engine")])
    assert r.exit_code == 0, r.output
    v = read_report(build_dir)["variants"][-1]
    meas = v["latency_ms"]["target_measured"]
    assert meas["source"] == "trtexec" and meas["runs"] == 5
    assert meas["median"] == pytest.approx(2 * v["latency_ms"]["target_estimated"] + 0.02,
                                           rel=1e-6)
    d = v["device"]
    assert d["tensorrt"] == "10.3.0" and d["state"]["nvpmodel"]["mode"] == "MAXN"
    assert d["estimate_assumed"]["gpu_mhz"] == 625
    assert d["layers_summary"]["nodes_not_found"] == []
    assert d["layers_summary"]["measured_joined_ms"] == pytest.approx(
        2 * d["layers_summary"]["estimated_joined_ms"])
    assert d["power_w"] is None and "no power" in d["power_note"]
    md = (build_dir / "report.md").read_text()
    assert "## On the device" in md and "nvpmodel MAXN" in md and "625 MHz" in md
    assert "Device layers of" in (build_dir / "report.html").read_text()
    assert (build_dir / "device" / TIMES_NAME).is_file()  # the evidence is kept


def test_profile_engine_on_the_device_with_trtexec(build_dir, tmp_path):
    """`edgeprune profile BUILD_DIR --engine` where trtexec (a stand-in) is the timer."""
    report = read_report(build_dir)
    exports = _exports(report, tmp_path / "exports", factor=3.0)
    trtexec = ('#!/usr/bin/env bash\nfor a in "$@"; do case "$a" in\n'
               '  --help) echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300]"; exit 0;;\n'
               f'  --exportTimes=*) cp {exports}/{TIMES_NAME} "${{a#*=}}";;\n'
               f'  --exportProfile=*) cp {exports}/{PROFILE_NAME} "${{a#*=}}";;\n'
               f'  --exportLayerInfo=*) cp {exports}/{LAYERS_NAME} "${{a#*=}}";;\n'
               'esac; done\n')
    bin_dir = tmp_path / "bin"
    _stand_in(bin_dir, "trtexec", trtexec)
    _stand_in(bin_dir, "nvpmodel", NVPMODEL)
    engine = build_dir / "engine" / "model.engine"
    engine.write_bytes(b"stand-in engine")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = CliRunner().invoke(app, ["profile", str(build_dir), "--engine", str(engine)], env=env)
    assert r.exit_code == 0, r.output
    d = read_report(build_dir)["variants"][-1]["device"]
    assert d["timer"] == "trtexec" and d["state"]["nvpmodel"]["mode"] == "MAXN"
    assert d["layers_summary"]["measured_joined_ms"] == pytest.approx(
        3 * d["layers_summary"]["estimated_joined_ms"])
    assert "engine_accuracy.py" in d["accuracy_note"]  # trtexec alone runs no test split
    # once engine_accuracy.py has run with the system Python, its result is taken
    (build_dir / "engine" / "accuracy.json").write_text('{"accuracy": 0.5, "images": 359}')
    r = CliRunner().invoke(app, ["profile", str(build_dir), "--engine", str(engine)], env=env)
    assert r.exit_code == 0, r.output
    acc = read_report(build_dir)["variants"][-1]["device"]["accuracy"]
    assert acc["engine"] == 0.5 and acc["flagged"]
    (build_dir / "engine" / "accuracy.json").write_text('{"accuracy": 7}')
    bad = CliRunner().invoke(app, ["profile", str(build_dir), "--engine", str(engine)], env=env)
    assert bad.exit_code == 2 and "not an accuracy record" in bad.stderr
    (build_dir / "engine" / "accuracy.json").unlink()


def test_refused_inputs(build_dir, tmp_path):
    runner = CliRunner()
    both = runner.invoke(app, ["profile", str(build_dir), "--engine", "e", "--trtexec-dir", "d"])
    assert both.exit_code == 2 and "not both or neither" in both.stderr
    fresh = tmp_path / "fresh"
    shutil.copytree(build_dir, fresh, ignore=shutil.ignore_patterns("device"))
    missing = runner.invoke(app, ["profile", str(fresh), "--trtexec-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "--exportTimes" in missing.stderr
    assert not (fresh / "device").exists()  # a refused run leaves nothing behind
    gap = runner.invoke(app, ["profile", str(build_dir), "--trtexec-dir", str(tmp_path),
                              "--max-accuracy-gap", "5"])
    assert gap.exit_code == 2 and "fraction" in gap.stderr


def test_accuracy_gap_is_flagged():
    found = {"latency": {"source": "tensorrt-python"}, "accuracy": {"accuracy": 0.90,
                                                                    "images": 100}}
    report = {"target": {"name": "jetson-orin-nano", "gpu": {"max_clock_mhz": 625}}}
    flagged = device_record(found, {"accuracy": 0.93}, report, 0.01)["accuracy"]
    assert flagged["flagged"] and flagged["gap"] == pytest.approx(0.03)
    assert not device_record(found, {"accuracy": 0.905}, report, 0.01)["accuracy"]["flagged"]


def _set_measured(build_dir, measure) -> None:
    """Rewrite the device layers' measured ms (what a device would have measured)."""
    from edgeprune.report import write_reports

    report = read_report(build_dir)
    for row in report["variants"][-1]["device"]["layers"]:
        if row["kind"] == "layer":
            row["measured_ms"] = measure(row)
    write_reports(report, build_dir)


def test_fit_recovers_known_factors(build_dir, tmp_path):
    """Measured at exactly the estimate, the fit keeps the target's factors; measured as a
    device with efficiency 0.01 and 25 us launches would run, it finds those."""
    from edgeprune.profile.fit import collect, fit_target, predict
    from edgeprune.targets import load_target, load_target_file

    target = load_target("jetson-orin-nano")
    _set_measured(build_dir, lambda row: row["estimated_ms"])
    r = fit_target(target, [build_dir], tmp_path / "same.toml")
    assert r["efficiency"]["fp16"] == pytest.approx(0.35, rel=1e-3)
    assert r["launch_overhead_us"] == pytest.approx(10.0, rel=1e-3) and r["rmse_ms"] < 1e-6
    # the digits model is memory-bound at 0.35: the data cannot move the efficiency
    assert r["compute_bound_nodes"]["fp16"] == 0
    assert "not determined" in (tmp_path / "same.toml").read_text()

    truth = iter(predict(collect(target, [build_dir]), {"fp16": 0.01}, 25e-6) * 1e3)
    _set_measured(build_dir, lambda row: next(truth) if row["estimated_ms"] else 0.0)
    out = tmp_path / "fit.toml"
    r = fit_target(target, [build_dir], out)
    assert r["efficiency"]["fp16"] == pytest.approx(0.01, rel=1e-3)
    assert r["launch_overhead_us"] == pytest.approx(25.0, rel=1e-3)
    assert r["rmse_ms"] < 1e-6 < r["rmse_ms_before"]
    fitted = load_target_file(out)
    assert fitted.section("estimate")["fitted_from"][0].startswith(str(build_dir))
    assert fitted.section("estimate")["efficiency_fp16"] == pytest.approx(0.01, abs=1e-4)
    assert fitted.section("gpu") == target.section("gpu")  # the rest of the file is kept


def test_targets_fit_cli(build_dir, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["targets", "fit", "jetson-orin-nano", str(build_dir), "--out",
                            str(tmp_path / "t.toml")])
    assert r.exit_code == 0, r.output
    assert "fitted on" in r.output and (tmp_path / "t.toml").is_file()
    wrong = runner.invoke(app, ["targets", "fit", "jetson-nano", str(build_dir), "--out",
                                str(tmp_path / "u.toml")])
    assert wrong.exit_code == 2 and "not jetson-nano" in wrong.stderr
    usage = runner.invoke(app, ["targets", "fit", "jetson-nano"])
    assert usage.exit_code == 2 and "usage" in usage.stderr


def test_accuracy_script_stands_alone_on_old_pythons(build_dir, tmp_path):
    """engine_accuracy.py runs under JetPack's system Python (3.6 on JetPack 4.6) without
    edgeprune: its grammar is 3.6's, it imports no edgeprune module, it fails in one line."""
    import ast
    import sys

    script = build_dir / "engine" / "engine_accuracy.py"
    tree = ast.parse(script.read_text(), feature_version=(3, 6))
    imported = {a.name.split(".")[0] for n in ast.walk(tree)
                if isinstance(n, ast.Import | ast.ImportFrom)
                for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
    assert imported <= {"argparse", "ctypes", "json", "sys", "numpy", "tensorrt"}
    run = subprocess.run([sys.executable, "-I", str(script), str(build_dir / "engine" /
                          "model.engine"), str(build_dir / "testset.npz")],
                         capture_output=True, text=True, check=False, cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.startswith("error: ")  # no tensorrt here


def test_ingest_reads_the_accuracy_the_script_wrote(build_dir, tmp_path):
    report = read_report(build_dir)
    folder = _exports(report, tmp_path / "engine")
    host = report["variants"][-1]["accuracy"]
    (folder / "accuracy.json").write_text(json.dumps({"accuracy": host - 0.05, "images": 359,
                                                      "batch": 1, "tensorrt": "10.3.0"}))
    r = CliRunner().invoke(app, ["profile", str(build_dir), "--trtexec-dir", str(folder)])
    assert r.exit_code == 0, r.output
    acc = read_report(build_dir)["variants"][-1]["device"]["accuracy"]
    assert acc["flagged"] and acc["gap"] == pytest.approx(0.05)
    assert "below ONNX Runtime's on the host" in (build_dir / "report.md").read_text()


@pytest.mark.tensorrt
def test_engine_accuracy_with_tensorrt(build_dir):
    pytest.importorskip("tensorrt")
    from edgeprune.engine.accuracy import engine_accuracy

    engine = build_dir / "engine" / "model.engine"
    if not engine.is_file() or engine.stat().st_size < 1000:
        pytest.skip("no engine built on this machine")
    acc = engine_accuracy(engine, build_dir / "testset.npz")
    host = read_report(build_dir)["variants"][-1]["accuracy"]
    assert abs(acc["accuracy"] - host) < 0.02
