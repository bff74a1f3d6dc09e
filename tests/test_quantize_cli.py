"""``edgeprune quantize``: outputs, precision checks against targets, one-line errors, exit 2."""

from __future__ import annotations

import json

import edgeprune.cli  # noqa: F401  (registers the commands)
import numpy as np
import pytest
from edgeprune.cli.app import app
from edgeprune.quantize import read_metadata
from edgeprune.quantize.calibration import read_trt_cache
from typer.testing import CliRunner

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["quantize", *map(str, args)])


def test_auto_on_jetson_nano_is_fp16(resnet20_digits_path, tmp_path):
    out = tmp_path / "out"
    r = _run(resnet20_digits_path, "--precision", "auto", "--target", "jetson-nano",
             "--data", "digits", "--out", out)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "quantize.json").read_text())
    assert doc["fp16"]["accuracy"] > 0.9 and doc["fp16"]["fp32_accuracy"] > 0.9
    assert doc["fp16"]["target"] == "jetson-nano"
    assert (out / "model.onnx").is_file()  # the fp32 ONNX TensorRT builds --fp16 from
    assert read_metadata(out / "model.fp16.onnx")["edgeprune.precision"] == "fp16"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_allow_emulated_int8_on_jetson_nano(resnet20_digits_path, tmp_path):
    out = tmp_path / "out"
    args = (resnet20_digits_path, "--precision", "int8", "--target", "jetson-nano", "--data",
            "digits", "--out", out, "--calibration-samples", "32", "--calibration-method",
            "percentile", "--percentile", "99.9")
    refused = _run(*args)
    assert refused.exit_code == 2 and not out.exists()
    r = _run(*args, "--allow-emulated")
    assert r.exit_code == 0, r.output
    assert (out / "model.int8.tensorrt.onnx").is_file()
    assert read_trt_cache(out / "calibration.cache").version == 8201
    entry = json.loads((out / "quantize.json").read_text())["int8"]
    assert entry["calibration"]["method"] == "percentile"
    assert entry["calibration"]["samples"] == 32 and entry["calibration"]["percentile"] == 99.9


@pytest.mark.parametrize("args, message", [
    (["--precision", "int4", "--data", "digits"], "unknown precision 'int4'"),
    (["--precision", "int8", "--data", "digits", "--target", "jetson-nano"],
     "jetson-nano does not run int8 fast: its precisions are fp32, fp16"),
    (["--precision", "int8", "--data", "digits", "--calibration-samples", "0"],
     "--calibration-samples must be at least 1, got 0"),
    (["--precision", "int8", "--data", "digits", "--calibration-method", "kl"],
     "unknown calibration method 'kl'"),
    (["--precision", "int8", "--data", "digits", "--int8-flavour", "tflite"],
     "unknown int8 flavour 'tflite'"),
    (["--precision", "binary"], "binary needs data (calibration or fine-tuning): pass --data"),
    (["--precision", "fp16", "--target", "nope"], "unknown target 'nope'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(resnet20_digits_path, tmp_path, args,
                                                         message):
    out = tmp_path / "out"
    r = _run(resnet20_digits_path, *args, "--out", out)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in r.output
    assert "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_empty_training_split_is_refused(resnet20_digits_path, tmp_path):
    data = tmp_path / "empty.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x_train=np.zeros((0, 1, 8, 8), np.uint8), y_train=np.zeros(0, np.int64),
             x_test=rng.integers(0, 255, (10, 1, 8, 8), dtype=np.uint8),
             y_test=np.arange(10))
    out = tmp_path / "out"
    r = _run(resnet20_digits_path, "--precision", "int8", "--data", f"npz:{data}", "--out", out)
    assert r.exit_code == 2 and "train split is empty" in r.output
    assert not out.exists()
