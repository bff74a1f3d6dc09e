"""int8 calibration on ``calib:DIR``, a folder of unlabeled images, and ``--mean/--std`` for
model files that store no normalization."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import edgeprune.cli  # noqa: F401  (registers the commands)
import numpy as np
import pytest
from edgeprune.checkpoint import load_model, save_checkpoint
from edgeprune.cli.app import app
from edgeprune.errors import EdgepruneError
from edgeprune.imagefiles import find_images
from edgeprune.quantize.calibration import CalibrationImages
from typer.testing import CliRunner

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [*map(str, args)])


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory, digits):
    """80 digits as 16×16 JPEGs and PNGs in nested folders (no labels: folder names are
    arbitrary), plus what must never be read: a hidden file, a non-image, a link out."""
    from PIL import Image

    root = tmp_path_factory.mktemp("calib") / "images"
    for i, x in enumerate(digits.train.x[:80]):
        im = Image.fromarray(x[0]).resize((16, 16), Image.BILINEAR)
        folder = root / f"batch{i % 3}" / ("deep" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        im.convert("RGB").save(folder / f"{i:03d}.jpg", quality=95) if i % 2 else \
            im.save(folder / f"{i:03d}.png")
    (root / ".DS_Store").write_bytes(b"\0junk")
    (root / "notes.txt").write_text("not an image")
    outside = root.parent / "outside.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    os.symlink(outside, root / "link-out.png")
    os.symlink(root.parent, root / "loop", target_is_directory=True)
    return root


def test_find_images_is_nested_and_never_leaves_the_folder(calib_dir):
    files, skipped = find_images(calib_dir)
    assert len(files) == 80 and skipped == 1  # the link out; the folder link is not entered
    assert all(p.resolve().is_relative_to(calib_dir.resolve()) for p in files)
    assert not any(p.name.startswith(".") or p.suffix == ".txt" for p in files)


def test_images_take_the_models_input(calib_dir):
    images = CalibrationImages.load(f"calib:{calib_dir}", (1, 8, 8), samples=30, seed=0)
    x = np.asarray(images.files)
    assert x.shape == (30, 1, 8, 8) and x.dtype == np.uint8 and x.max() > 100
    again = CalibrationImages.load(f"calib:{calib_dir}", (1, 8, 8), samples=30, seed=0)
    assert again.files.paths == images.files.paths  # seeded
    assert "30 of 80 unlabeled images" in images.describe()


def test_int8_calibrated_on_a_folder(resnet20_digits_path, calib_dir, tmp_path):
    out = tmp_path / "q"
    r = _run("quantize", resnet20_digits_path, "--precision", "int8", "--data", "digits",
             "--calibration-data", f"calib:{calib_dir}", "--calibration-samples", "48",
             "--out", out)
    assert r.exit_code == 0, r.output
    entry = json.loads((out / "quantize.json").read_text())["int8"]
    assert entry["calibration"]["source"].startswith(f"calib:{calib_dir}")
    assert entry["calibration"]["samples"] == 48
    # unlabeled look-alikes of the training images calibrate as well as the train split
    assert entry["accuracy"] > entry["fp32_accuracy"] - 0.05


def test_int8_from_a_folder_needs_no_data(resnet20_digits_path, calib_dir, tmp_path):
    out = tmp_path / "q"
    r = _run("quantize", resnet20_digits_path, "--precision", "int8",
             "--calibration-data", f"calib:{calib_dir}", "--calibration-samples", "16",
             "--out", out)
    assert r.exit_code == 0, r.output
    entry = json.loads((out / "quantize.json").read_text())["int8"]
    assert entry["accuracy"] is None and entry["calibration"]["samples"] == 16
    assert (out / "model.int8.ort-cpu.onnx").is_file()


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "has no images"),
    (lambda d: (d / "f.png").write_bytes(b"x") and d / "f.png", "is not a folder"),
    (lambda d: (d / "links").mkdir() or os.symlink("/etc/hostname", d / "links" / "h.png")
     or d / "links", "1 link(s) leading out of it skipped"),
])
def test_bad_folders_are_one_line_errors_before_any_work(resnet20_digits_path, tmp_path, make,
                                                         message):
    spec = f"calib:{make(tmp_path)}"
    out = tmp_path / "out"
    r = _run("quantize", resnet20_digits_path, "--precision", "int8", "--data", "digits",
             "--calibration-data", spec, "--out", out)
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


def test_unknown_calibration_spec_is_refused(resnet20_digits_path, tmp_path):
    r = _run("build", resnet20_digits_path, "--target", "host-cpu", "--precision", "int8",
             "--data", "digits", "--calibration-data", str(tmp_path), "--out", tmp_path / "b")
    assert r.exit_code == 2 and "give calib:DIR" in r.output, r.output


# ---------------------------------------------------------------- --mean/--std


@pytest.fixture(scope="module")
def bare_model(resnet20_digits_path, tmp_path_factory):
    """The digits model saved without its normalization (as a file from elsewhere would be)."""
    loaded = load_model(resnet20_digits_path)
    path = tmp_path_factory.mktemp("bare") / "bare.pt"
    save_checkpoint(path, loaded.model, replace(loaded.info, mean=None, std=None))
    return path, load_model(resnet20_digits_path).info


def _acc(*args):
    r = _run("evaluate", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_mean_std_for_a_file_without_normalization(bare_model):
    path, info = bare_model
    mean, std = ",".join(map(str, info.mean)), ",".join(map(str, info.std))
    given = _acc(path, "--data", "digits", "--mean", mean, "--std", std)
    assert given["normalization"] == "--mean/--std"
    default = _acc(path, "--data", "digits")
    assert "statistics" in default["normalization"]
    wrong = _acc(path, "--data", "digits", "--mean", "0.9", "--std", "0.05")
    assert given["accuracy"] > 0.9 and wrong["accuracy"] < given["accuracy"] - 0.2


def test_mean_std_against_the_files_values(resnet20_digits_path):
    info = load_model(resnet20_digits_path).info
    same = _acc(resnet20_digits_path, "--data", "digits", "--mean", str(info.mean[0]),
                "--std", str(info.std[0]))
    assert same["normalization"] == "checkpoint"
    r = _run("evaluate", resnet20_digits_path, "--data", "digits", "--mean", "0.5", "--std",
             "0.5")
    assert r.exit_code == 2 and "leave --mean/--std out" in r.output, r.output


@pytest.mark.parametrize("args, message", [
    (["--mean", "0.5"], "--mean needs --std"),
    (["--mean", "0.5,0.5", "--std", "0.2"], "--mean has 2 values but --std has 1"),
    (["--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"], "1-channel images"),
    (["--mean", "a", "--std", "0.2"], "numbers separated by commas"),
    (["--mean", "0.5", "--std", "0"], "--std must be positive"),
])
def test_bad_mean_std(bare_model, args, message):
    r = _run("evaluate", bare_model[0], "--data", "digits", *args)
    assert r.exit_code == 2 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_build_report_says_where_normalization_came_from(bare_model, calib_dir, tmp_path):
    """calib:DIR with no --data: the normalization is --mean/--std's, and the report says so."""
    path, info = bare_model
    out = tmp_path / "b"
    r = _run("build", path, "--target", "host-cpu", "--precision", "int8", "--method", "none",
             "--calibration-data", f"calib:{calib_dir}", "--calibration-samples", "16",
             "--mean", str(info.mean[0]), "--std", str(info.std[0]), "--no-measure-host",
             "--out", out)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["normalization"]["source"] == "--mean/--std"
    assert "from --mean/--std (the model file stores none)" in (out / "report.md").read_text()
    no_norm = _run("build", path, "--target", "host-cpu", "--precision", "int8", "--method",
                   "none", "--calibration-data", f"calib:{calib_dir}", "--out", tmp_path / "c")
    assert no_norm.exit_code == 2 and "pass --mean and --std" in no_norm.output, no_norm.output


def test_profile_takes_mean_std(bare_model, tmp_path):
    path, info = bare_model
    r = _run("profile", path, "--target", "host-cpu", "--data", "digits", "--no-host",
             "--mean", str(info.mean[0]), "--std", str(info.std[0]), "--out", tmp_path)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"]["normalization"]["source"] == "--mean/--std"
    assert report["variants"][0]["accuracy"] > 0.9


def test_mean_std_is_refused_when_it_differs_in_the_api(resnet20_digits_path):
    from edgeprune import api

    with pytest.raises(EdgepruneError, match="leave --mean/--std out"):
        api.load(resnet20_digits_path, mean=[0.1], std=[0.2])
