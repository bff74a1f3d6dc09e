"""``edgeprune build`` end to end: every stage's files, the precision rules, and resume."""

import json

import edgeprune.cli  # noqa: F401  (registers the commands)
import pytest
from edgeprune.build import BuildConfig, run_build
from edgeprune.cli.app import app
from edgeprune.report import validate
from typer.testing import CliRunner

# Small pruning settings so that a build takes seconds: one stage, three fine-tune epochs, and
# ε = 1 so that every policy qualifies and the build surely removes units: the briefly trained
# digits model has no free units (its cheapest policy costs 65 points of validation accuracy
# before fine-tuning, which wins most of it back).
FAST_PRUNE = ["--stages", "1", "--finetune-epochs", "3", "--samples", "300",
              "--max-error-increase", "1", "--calibration-samples", "64", "--no-measure-host"]
runner = CliRunner()


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
    assert names == ["original", "pruned", "pruned-int8"]
    original, pruned, int8 = report["variants"]
    assert report["pruning"]["units_after"] < report["pruning"]["units_before"]
    assert pruned["params"] < original["params"] and pruned["macs"] < original["macs"]
    assert int8["weights_bytes"] < pruned["weights_bytes"] / 3  # int8 weights, not fp32
    assert int8["energy_mj"]["total"] < pruned["energy_mj"]["total"]
    assert abs(int8["accuracy"] - pruned["accuracy"]) <= 0.01
    record = json.loads((out / "build.json").read_text())
    assert record["seed"] == 0 and record["versions"]["torch"].startswith("2.14")
    assert "--int8" in (out / "engine" / "build_engine.sh").read_text()
    assert "pruned-int8" in result.output  # the summary table


def test_nano_fp16(resnet20_digits_path, tmp_path):
    r = build(resnet20_digits_path, "--target", "jetson-nano", "--data", "digits",
              "--precision", "fp16", "--method", "none", "--out", tmp_path, "--no-measure-host")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [v["precision"] for v in report["variants"]] == ["fp32", "fp16"]
    assert report["pruning"] is None
    plan = json.loads((tmp_path / "engine" / "plan.json").read_text())
    assert "--fp16" in (tmp_path / "engine" / "build_engine.sh").read_text()
    assert plan  # the engine plan records what the device will do


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
    assert first["done"] == ["load", "prune", "export"]
    assert not (tmp_path / "report.json").exists()
    pruned_before = (tmp_path / "pruned.pt").stat().st_mtime_ns
    logs.clear()
    state = run_build(cfg, resume=True, log=logs.append)
    assert state["done"][-1] == "report" and (tmp_path / "report.json").is_file()
    assert "prune: done in an earlier run, skipped" in logs
    assert (tmp_path / "pruned.pt").stat().st_mtime_ns == pruned_before  # not redone
    # A resumed build gives what an uninterrupted one gives.
    fresh = run_build(BuildConfig(**{**cfg.__dict__, "out": tmp_path / "fresh"}), log=logs.append)
    assert state["results"]["prune"] == fresh["results"]["prune"]
    assert state["results"]["export"]["pruned_accuracy"] == \
        fresh["results"]["export"]["pruned_accuracy"]


def test_resume_with_other_options_is_refused(resnet20_digits_path, tmp_path):
    cfg = BuildConfig(target="jetson-orin-nano", model=resnet20_digits_path, out=tmp_path,
                      method="none", precision="fp16", measure_host=False)
    run_build(cfg, log=lambda m: None, stop_after="load")
    r = build(resnet20_digits_path, "--target", "jetson-orin-nano", "--method", "none",
              "--precision", "fp32", "--out", tmp_path, "--resume")
    assert r.exit_code == 2 and "made with other options" in r.stderr


def test_config_file(resnet20_digits_path, tmp_path):
    conf = tmp_path / "edgeprune.toml"
    conf.write_text('target = "jetson-orin-nano"\nmethod = "none"\nprecision = "fp16"\n'
                    'measure_host = false\n[quantize]\nno_such_option = 1\n')
    r = build(resnet20_digits_path, "--config", conf, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "[quantize] has no option no_such_option" in r.stderr
