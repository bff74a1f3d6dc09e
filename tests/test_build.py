"""``edgeprune build`` end to end: every stage's files, the precision rules, and resume."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import edgeprune.cli  # noqa: F401  (registers the commands)
import numpy as np
import pytest
import torch
from edgeprune.build import BuildConfig, BuildState, run_build
from edgeprune.builddir import BuildDir
from edgeprune.cli.app import app
from edgeprune.compat import CompatReport
from edgeprune.errors import EdgepruneError
from edgeprune.report import validate
from typer.testing import CliRunner

# Small pruning settings so that a build takes seconds: one stage, three fine-tune epochs, and
# ε = 1 so that every policy qualifies and the build surely removes units: the briefly trained
# digits model has no free units (its cheapest policy costs 65 points of validation accuracy
# before fine-tuning, which wins most of it back).
FAST_PRUNE = ["--stages", "1", "--finetune-epochs", "3", "--samples", "300",
              "--max-error-increase", "1", "--calibration-samples", "64", "--no-measure-host"]
runner = CliRunner()
TOOLCHAIN = str(Path(__file__).resolve().parents[1] / "toolchain")


def build(*args):
    return runner.invoke(app, ["build", *map(str, args)])


@pytest.fixture(scope="module")
def xavier_int8(resnet20_digits_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("xavier")
    r = build(resnet20_digits_path, "--target", "jetson-xavier-nx", "--data", "digits",
              "--precision", "int8", "--out", out, *FAST_PRUNE)
    assert r.exit_code == 0, r.output
    return out, r


def test_build_directory_holds_everything(xavier_int8):
    out, result = xavier_int8
    for name in ("pruned.pt", "original.onnx", "model.onnx", "model.int8.tensorrt.onnx",
                 "calibration.cache", "quantize.json", "mspic.json", "mspic.png",
                 "engine/build_engine.sh", "engine/plan.json", "report.json", "report.md",
                 "report.html", "build.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    validate(report)
    names = [v["name"] for v in report["variants"]]
    # the original at int8 too, so that pruning's and quantization's effects can be told apart
    assert names == ["original", "original-int8", "pruned", "pruned-int8"]
    original, original_int8, pruned, int8 = report["variants"]
    assert original_int8["params"] == original["params"]
    assert original_int8["weights_bytes"] < original["weights_bytes"] / 3
    assert (out / "original-quantized" / "model.int8.tensorrt.onnx").is_file()
    md = (out / "report.md").read_text()
    assert "## Pruning vs quantization" in md and "| quantization to int8 (unpruned) |" in md
    assert report["pruning"]["units_after"] < report["pruning"]["units_before"]
    assert pruned["params"] < original["params"] and pruned["macs"] < original["macs"]
    assert int8["weights_bytes"] < pruned["weights_bytes"] / 3  # int8 weights, not fp32
    assert int8["energy_mj"]["total"] < pruned["energy_mj"]["total"]
    assert abs(int8["accuracy"] - pruned["accuracy"]) <= 0.01
    record = json.loads((out / "build.json").read_text())
    assert record["seed"] == 0 and record["versions"]["torch"].startswith("2.14")
    assert "--int8" in (out / "engine" / "build_engine.sh").read_text()
    assert "pruned-int8" in result.output  # the summary table


def test_nano_fp16_without_pruning_writes_the_model_once(resnet20_digits_path, tmp_path):
    r = build(resnet20_digits_path, "--target", "jetson-nano", "--data", "digits",
              "--precision", "fp16", "--method", "none", "--out", tmp_path, "--no-measure-host")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(v["name"], v["precision"]) for v in report["variants"]] == [
        ("original", "fp32"), ("original-fp16", "fp16")]  # nothing was pruned: no "pruned"
    assert report["pruning"] is None and "mi_plot" not in report
    assert (tmp_path / "model.onnx").is_file()
    assert not (tmp_path / "pruned.pt").exists() and not (tmp_path / "original.onnx").exists()
    plan = json.loads((tmp_path / "engine" / "plan.json").read_text())
    assert "--fp16" in (tmp_path / "engine" / "build_engine.sh").read_text()
    assert plan["precision"] == "fp16"


def test_allow_emulated_reaches_every_stage(resnet20_digits_path, tmp_path):
    r = build(resnet20_digits_path, "--target", "jetson-nano", "--data", "digits",
              "--precision", "int8", "--allow-emulated", "--method", "none", "--out", tmp_path,
              "--no-measure-host", "--calibration-samples", "32")
    assert r.exit_code == 0, r.output
    plan = json.loads((tmp_path / "engine" / "plan.json").read_text())
    assert plan["precision"] == "int8" and plan["int8"]
    choice = json.loads((tmp_path / "report.json").read_text())["precision_choice"]
    assert choice["emulated"] and "emulated" in choice["reason"]


@pytest.mark.parametrize("target", ["jetson-orin-nano", "jetson-xavier-nx"])
def test_auto_picks_the_fastest_by_the_targets_estimate(resnet20_digits_path, tmp_path, target):
    r = build(resnet20_digits_path, "--target", target, "--data", "digits", "--method", "none",
              "--out", tmp_path, "--no-measure-host")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report.json").read_text())
    choice = report["precision_choice"]
    est = choice["estimates_ms"]
    assert set(est) == {"fp32", "fp16", "int8"}
    assert choice["precision"] == min(est, key=est.get) == report["precision"]
    # On this small model the int8 graph's Q/DQ launches cost more than int8 saves.
    assert est["int8"] > est["fp32"] and choice["precision"] != "int8"
    assert f"precision {choice['precision']}: fastest by {target}'s latency estimate" in r.output
    assert not (tmp_path / ".work").exists()
    md = (tmp_path / "report.md").read_text()
    assert "## Precision" in md and f"latency estimate: {choice['precision']}" in md


def test_nano_int8_is_refused_naming_its_precisions(resnet20_digits_path, tmp_path):
    out = tmp_path / "b"
    r = build(resnet20_digits_path, "--target", "jetson-nano", "--data", "digits",
              "--precision", "int8", "--out", out)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "error: jetson-nano does not run int8 fast: its precisions are fp32, fp16; pick one of "
        "those, or pass --allow-emulated"]
    assert not (out / "report.json").exists()


def test_resume_after_a_build_killed_mid_way(resnet20_digits_path, tmp_path):
    cfg = BuildConfig(target="jetson-orin-nano", model=resnet20_digits_path, data="digits",
                      out=tmp_path, precision="fp16", measure_host=False,
                      prune={"stages": 1, "finetune_epochs": 1, "samples": 300,
                             "max_error_increase": 0.15})
    logs: list[str] = []
    first = run_build(cfg, log=logs.append, stop_after="export")  # "killed" after export
    assert first.done == ["load", "prune", "export"]
    assert not (tmp_path / "report.json").exists()
    pruned_before = (tmp_path / "pruned.pt").stat().st_mtime_ns
    logs.clear()
    state = run_build(cfg, resume=True, log=logs.append)
    assert state.done[-1] == "report" and (tmp_path / "report.json").is_file()
    assert "prune: done in an earlier run, skipped" in logs
    assert (tmp_path / "pruned.pt").stat().st_mtime_ns == pruned_before  # not redone
    # A resumed build gives what an uninterrupted one gives.
    fresh = run_build(BuildConfig(**{**cfg.__dict__, "out": tmp_path / "fresh"}), log=logs.append)
    assert state.results["prune"] == fresh.results["prune"]
    assert state.results["export"].pruned_accuracy == fresh.results["export"].pruned_accuracy


def test_state_round_trips_as_typed_results(resnet20_digits_path, tmp_path):
    cfg = BuildConfig(target="jetson-agx-orin", model=resnet20_digits_path, out=tmp_path,
                      method="none", precision="fp16", measure_host=False)
    state = run_build(cfg, log=lambda m: None)
    again = BuildState.read(tmp_path / "build-state.json")
    assert again.results == state.results and again.done == state.done
    assert isinstance(again.results["check"].report, CompatReport)
    assert again.results["load"].resolution.precision == "fp16"
    # the engine plan took the check's report instead of checking again
    assert again.results["engine"].plan["ops_checked"] == again.results["check"].report.ops_file


def _fp16_none(model, out):
    return BuildConfig(target="jetson-orin-nano", model=model, out=out, method="none",
                       precision="fp16", measure_host=False)


def test_resume_with_other_options_is_refused(resnet20_digits_path, tmp_path):
    run_build(_fp16_none(resnet20_digits_path, tmp_path), log=lambda m: None, stop_after="load")
    r = build(resnet20_digits_path, "--target", "jetson-orin-nano", "--method", "none",
              "--precision", "fp32", "--out", tmp_path, "--resume")
    assert r.exit_code == 2 and "made with precision = 'fp16', now 'fp32'" in r.stderr


def test_resume_refuses_a_changed_model_file(resnet20_digits_path, tmp_path):
    model = tmp_path / "m.pt"
    shutil.copyfile(resnet20_digits_path, model)
    run_build(_fp16_none(model, tmp_path / "b"), log=lambda m: None, stop_after="load")
    ckpt = torch.load(model)
    ckpt["state_dict"]["fc.bias"] += 1.0  # same path, same options, other weights
    torch.save(ckpt, model)
    r = build(model, "--target", "jetson-orin-nano", "--method", "none", "--precision", "fp16",
              "--out", tmp_path / "b", "--resume", "--no-measure-host")
    assert r.exit_code == 2 and "the model file changed" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_resume_refuses_changed_data(resnet20_digits_path, digits, tmp_path):
    data = tmp_path / "d.npz"
    arrays = {"x_train": digits.train.x, "y_train": digits.train.y, "x_test": digits.test.x,
              "y_test": digits.test.y}
    np.savez(data, **arrays)
    cfg = BuildConfig(**{**_fp16_none(resnet20_digits_path, tmp_path / "b").__dict__,
                         "data": f"npz:{data}"})
    run_build(cfg, log=lambda m: None, stop_after="load")
    arrays["x_test"] = arrays["x_test"][::-1].copy()  # same file name, other content
    np.savez(data, **arrays)
    with pytest.raises(EdgepruneError, match=r"the data \(npz:.*\) changed"):
        run_build(cfg, resume=True, log=lambda m: None)


def test_corrupt_state_is_a_one_line_error(resnet20_digits_path, tmp_path):
    run_build(_fp16_none(resnet20_digits_path, tmp_path), log=lambda m: None, stop_after="load")
    (tmp_path / "build-state.json").write_text('{"fingerprint": {"options"')
    r = build(resnet20_digits_path, "--target", "jetson-orin-nano", "--method", "none",
              "--precision", "fp16", "--out", tmp_path, "--resume")
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'build-state.json'} is damaged; rerun the build without --resume "
        "to start over"]


def test_a_second_build_into_the_same_directory_is_refused(resnet20_digits_path, tmp_path):
    with BuildDir(tmp_path).locked():  # a build running in another process holds this lock
        r = build(resnet20_digits_path, "--target", "jetson-orin-nano", "--method", "none",
                  "--precision", "fp16", "--out", tmp_path)
    assert r.exit_code == 2 and "another edgeprune run is writing to" in r.stderr
    assert not (tmp_path / "build-state.json").exists()


def test_lock_is_per_process_file_lock(tmp_path):
    """The lock really excludes another process (fcntl), not only this one."""
    code = ("import sys; from edgeprune.builddir import BuildDir; "
            "from edgeprune.errors import EdgepruneError\n"
            "try:\n    BuildDir(sys.argv[1]).locked().__enter__()\n"
            "except EdgepruneError as e:\n    print(e); sys.exit(3)\n")
    with BuildDir(tmp_path).locked():
        p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": TOOLCHAIN})
    assert p.returncode == 3 and "another edgeprune run" in p.stdout
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": TOOLCHAIN})
    assert p.returncode == 0, p.stderr


def test_a_rebuild_never_shows_the_old_runs_files(resnet20_digits_path, tmp_path):
    (tmp_path / "mspic.png").write_bytes(b"an old plot")
    (tmp_path / "model.int8.tensorrt.onnx").write_bytes(b"an old model")
    (tmp_path / "notes.txt").write_text("the user's own file")
    run_build(_fp16_none(resnet20_digits_path, tmp_path), log=lambda m: None)
    report = json.loads((tmp_path / "report.json").read_text())
    assert "mi_plot" not in report and "old plot" not in (tmp_path / "report.html").read_text()
    assert not (tmp_path / "mspic.png").exists()
    assert not (tmp_path / "model.int8.tensorrt.onnx").exists()
    assert (tmp_path / "notes.txt").read_text() == "the user's own file"


def test_quantize_leaves_nothing_outside_out(resnet20_digits_path, tmp_path):
    out = tmp_path / "q"
    r = runner.invoke(app, ["quantize", str(resnet20_digits_path), "--precision", "int8",
                            "--data", "digits", "--out", str(out), "--calibration-samples", "16"])
    assert r.exit_code == 0, r.output
    assert [p.name for p in tmp_path.iterdir()] == ["q"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_config_file(resnet20_digits_path, tmp_path):
    conf = tmp_path / "edgeprune.toml"
    conf.write_text('target = "jetson-orin-nano"\nmethod = "none"\nprecision = "fp16"\n'
                    'measure_host = false\n[quantize]\nno_such_option = 1\n')
    r = build(resnet20_digits_path, "--config", conf, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "[quantize] has no option no_such_option" in r.stderr
    assert not (tmp_path / "o").exists()


class _Evil:
    """Unpickling this creates a file: the stand-in for code a model file could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("line", ['trust_model = "false"', "trust_model = true",
                                  'trust_model = "yes"'])
def test_a_config_file_never_turns_on_unpickling(tmp_path, line):
    marker = tmp_path / "code-ran"
    model = tmp_path / "evil.pt"
    torch.save(_Evil(marker), model)
    conf = tmp_path / "edgeprune.toml"
    conf.write_text(f'target = "jetson-orin-nano"\nmethod = "none"\nprecision = "fp16"\n{line}\n')
    r = build(model, "--config", conf, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "trust_model cannot be set in a config file" in r.stderr
    assert not marker.exists() and not (tmp_path / "o").exists()
    # Without the config line the file is refused unless --trust-model is given ...
    conf.write_text('target = "jetson-orin-nano"\nmethod = "none"\nprecision = "fp16"\n')
    r = build(model, "--config", conf, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--trust-model" in r.stderr and not marker.exists()
    # ... and only the flag runs it (which shows the marker is a real witness).
    build(model, "--config", conf, "--out", tmp_path / "o", "--trust-model")
    assert marker.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_out_is_refused_before_any_work(resnet20_digits_path, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        for out in (parent, parent / "new"):
            r = build(resnet20_digits_path, "--target", "jetson-orin-nano", "--method", "none",
                      "--precision", "fp16", "--out", out)
            assert r.exit_code == 2 and "writable" in r.stderr
    finally:
        parent.chmod(0o755)
