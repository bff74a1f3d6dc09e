"""``build --target A,B``: prune once, export and profile per target, one merged comparison; and
``--reuse-pruning DIR``, which the second target's build uses."""

from __future__ import annotations

import json

import edgeprune.cli  # noqa: F401  (registers the commands)
import pytest
from edgeprune.cli.app import app
from edgeprune.report import validate
from edgeprune.targets import list_targets
from typer.testing import CliRunner

runner = CliRunner()
# one stage, one fine-tune epoch, ε = 1 (so that units surely go): seconds on digits
FAST = ["--data", "digits", "--stages", "1", "--finetune-epochs", "1", "--samples", "200",
        "--max-error-increase", "1", "--no-measure-host"]


def build(*args):
    return runner.invoke(app, ["build", *map(str, args)])


@pytest.fixture(scope="module")
def two_targets(resnet20_digits_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("multi") / "out"
    r = build(resnet20_digits_path, "--target", "host-cpu,jetson-nano", "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    return out, r.output


def test_prunes_once_and_profiles_each_target(two_targets):
    out, output = two_targets
    first, second = out / "host-cpu", out / "jetson-nano"
    for d in (first, second):
        assert (d / "report.json").is_file() and (d / "pruned.pt").is_file()
    assert (first / "pruned.pt").read_bytes() == (second / "pruned.pt").read_bytes()
    assert (first / "stages").is_dir() and not (second / "stages").exists()  # pruned once
    assert output.count("pruned with mspic") == 1 and "pruning reused from" in output
    assert (second / "mspic.png").is_file()  # the MI plot travels with the pruning
    assert (first / "pruned.pt2").read_bytes() == (second / "pruned.pt2").read_bytes()
    nano = json.loads((second / "report.json").read_text())
    assert nano["pruning"]["reused_from"] == str(first)
    assert nano["target"]["name"] == "jetson-nano"
    assert (second / "engine" / "build_engine.sh").is_file()  # its own TensorRT engine plan


def test_merged_comparison(two_targets):
    out, output = two_targets
    merged = json.loads((out / "report.json").read_text())
    validate(merged)
    assert merged["comparison"] and merged["target"]["targets"] == ["host-cpu", "jetson-nano"]
    targets = {(v["target"], v["name"]) for v in merged["variants"]}
    assert {("host-cpu", "pruned"), ("jetson-nano", "pruned")} <= targets
    # nano's precision is fp16: the original at fp16 is there too, to tell the effects apart
    assert ("jetson-nano", "original-fp16") in targets
    md = (out / "report.md").read_text()
    assert "Pruning vs quantization" in md and "edgeprune comparison: host-cpu, jetson-nano" in md
    assert (out / "report.html").is_file() and "comparison:" in output


@pytest.mark.parametrize("targets, message", [
    ("host-cpu,jetson-nope", "unknown target 'jetson-nope'; choose one of: "),
    ("host-cpu,,jetson-nano", "has an empty name"),
    ("host-cpu,host-cpu", "names host-cpu twice"),
])
def test_bad_target_lists_fail_before_any_work(resnet20_digits_path, tmp_path, targets,
                                               message):
    out = tmp_path / "out"
    r = build(resnet20_digits_path, "--target", targets, "--out", out, *FAST)
    assert r.exit_code == 2 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    if "unknown" in message:
        assert all(t in r.output for t in list_targets())
    assert not out.exists()


def test_every_targets_precision_is_checked_first(resnet20_digits_path, tmp_path):
    # jetson-nano has no fast int8: refused before host-cpu's build starts
    out = tmp_path / "out"
    r = build(resnet20_digits_path, "--target", "host-cpu,jetson-nano", "--precision", "int8",
              "--out", out, *FAST)
    assert r.exit_code == 2 and "jetson-nano does not run int8 fast" in r.output, r.output
    assert not out.exists()


def test_reuse_pruning_refuses_other_options(two_targets, resnet20_digits_path, tmp_path):
    out, _ = two_targets
    args = [resnet20_digits_path, "--target", "jetson-xavier-nx", "--out", tmp_path / "x",
            "--reuse-pruning", out / "host-cpu"]
    other = [*FAST[:2], "--stages", "2", *FAST[4:]]
    r = build(*args, *other)
    assert r.exit_code == 2 and "pruned with prune =" in r.output, r.output
    r = build(*args[:-2], "--reuse-pruning", tmp_path, *FAST)
    assert r.exit_code == 2 and "no build-state.json there" in r.output, r.output
