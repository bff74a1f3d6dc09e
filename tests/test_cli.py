"""The command line end to end: train, evaluate, inspect, build, targets, and bad input."""

import json
import subprocess
import sys

import edgeprune.cli  # noqa: F401  (registers the commands)
import pytest
import torch
from edgeprune.cli.app import app
from typer.testing import CliRunner

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_for_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for cmd in ("train", "evaluate", "inspect", "build", "targets"):
        r = run(cmd, "--help")
        assert r.exit_code == 0, cmd
        assert "--help" in r.output


def test_train_evaluate_inspect(tmp_path):
    out = tmp_path / "m.pt"
    r = run("train", "--arch", "resnet20", "--data", "digits", "--epochs", "1", "--out", out)
    assert r.exit_code == 0, r.output
    assert out.is_file()
    r = run("evaluate", out, "--data", "digits", "--json")
    assert r.exit_code == 0 and 0.1 < json.loads(r.stdout)["accuracy"] <= 1.0
    r = run("inspect", out, "--json")
    report = json.loads(r.stdout)
    assert report["totals"]["units"] == 9 and report["units"][3]["kind"] == "projection"
    assert sum(u["params"] for u in report["units"]) < report["totals"]["params"]


def test_training_is_deterministic(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    for p in (a, b):
        run("train", "--arch", "resnet20", "--data", "digits", "--epochs", "1", "--out", p,
            "--seed", "3")
    sa, sb = torch.load(a)["state_dict"], torch.load(b)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_build_thin(resnet20_digits_path, tmp_path):
    out = tmp_path / "build"
    r = run("build", resnet20_digits_path, "--target", "jetson-nano", "--data", "digits",
            "--out", out)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["variants"][0]["params"] > 200_000
    assert (out / "model.onnx").is_file()


def _one_line_error(result, match):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and match in err and "Traceback" not in err


@pytest.mark.parametrize("args,match", [
    (["evaluate", "MISSING", "--data", "digits"], "does not exist"),
    (["train", "--arch", "resnet21", "--data", "digits", "--out", "OUT"], "unknown architecture"),
    (["train", "--arch", "resnet20", "--data", "mnist:x", "--out", "OUT"], "unknown data spec"),
    (["build", "MODEL", "--target", "jetson-nano9"], "unknown target"),
])
def test_bad_input(tmp_path, resnet20_digits_path, args, match):
    args = [str(tmp_path / "missing.pt") if a == "MISSING" else a for a in args]
    args = [str(tmp_path / "o.pt") if a == "OUT" else a for a in args]
    args = [str(resnet20_digits_path) if a == "MODEL" else a for a in args]
    _one_line_error(run(*args), match)
    assert not (tmp_path / "o.pt").exists()


def test_corrupt_and_pickled_models(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 10)
    _one_line_error(run("inspect", bad), "not a PyTorch model file")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _one_line_error(run("inspect", empty), "is empty")
    from edgeprune.models import create_model
    pickled = tmp_path / "whole.pt"
    torch.save(create_model("resnet20"), pickled)
    _one_line_error(run("inspect", pickled), "--trust-model")
    assert run("inspect", pickled, "--trust-model").exit_code == 0


def test_data_that_does_not_fit_the_model(resnet20_digits_path, tmp_path, cifar_subset_path):
    out = tmp_path / "build"
    _one_line_error(run("build", resnet20_digits_path, "--target", "jetson-nano", "--data",
                        f"npz:{cifar_subset_path}", "--out", out), "shape (1, 8, 8)")
    assert not (out / "report.json").exists()


def test_console_script_exit_code(tmp_path):
    """The installed entry point (not just the typer app) exits 2 on bad input."""
    r = subprocess.run([sys.executable, "-m", "edgeprune", "inspect", str(tmp_path / "x.pt")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
