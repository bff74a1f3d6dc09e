"""The Python API (edgeprune.api, exported from edgeprune) and examples/api_digits.py."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import edgeprune as ep
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_is_light_and_names_resolve():
    code = ("import sys, edgeprune as ep; assert 'torch' not in sys.modules; "
            "import edgeprune.build, edgeprune.prune; "
            "assert callable(ep.build_model) and callable(ep.prune_model); "
            "print(sorted(set(ep.__all__) - set(dir(ep)) - {'__version__'})[:3])")
    env = {"PYTHONPATH": str(REPO / "toolchain")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    for name in ep.__all__:
        assert getattr(ep, name) is not None


def test_example_runs_on_digits_and_logs_instead_of_printing(resnet20_digits_path, tmp_path,
                                                             caplog, capsys):
    spec = importlib.util.spec_from_file_location("api_digits", REPO / "examples" /
                                                  "api_digits.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with caplog.at_level(logging.INFO, logger="edgeprune"):
        result = example.main(tmp_path, quick=True, checkpoint=resnet20_digits_path)
    assert capsys.readouterr().out == ""  # library code does not print
    assert isinstance(result, ep.BuildResult)
    assert isinstance(result.loaded, ep.Loaded) and result.loaded.precision == "fp16"
    assert [v["name"] for v in result.variants][-1].endswith("-fp16")
    assert result.report == tmp_path / "build" / "report.html"
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    assert report["target"]["name"] == "jetson-nano"
    assert report["model"]["normalization"]["source"] == "checkpoint"
    assert "## Input normalization" in (tmp_path / "build" / "report.md").read_text()
    assert (tmp_path / "prune" / "pruned.pt").is_file() and (tmp_path / "pruned.onnx").is_file()
    messages = [r.getMessage() for r in caplog.records if r.name == "edgeprune"]
    assert any(m.startswith("loaded resnet20") for m in messages)
    assert any(m.startswith("wrote report.json") for m in messages)


@pytest.mark.slow
def test_progress_callback_sees_every_task(resnet20_digits, digits, tmp_path):
    from edgeprune.checkpoint import data_for_model

    seen: dict[str, tuple[float, float]] = {}
    ep.prune_model(resnet20_digits, data_for_model(resnet20_digits, digits), tmp_path,
                   ep.PruneConfig(method="random", stages=1, finetune_epochs=1, samples=100,
                                  counts=[2]),
                   on_progress=lambda task, done, total: seen.__setitem__(task, (done, total)))
    finetune = [t for t in seen if "fine-tune" in t]
    assert finetune and seen[finetune[0]][0] == pytest.approx(seen[finetune[0]][1])


def test_bad_input_is_one_line_error(tmp_path):
    with pytest.raises(ep.EdgepruneError, match="does not exist"):
        ep.profile_onnx(tmp_path / "missing.onnx", "jetson-nano")
    with pytest.raises(ep.EdgepruneError, match="input_shape"):
        import torch

        ep.export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
