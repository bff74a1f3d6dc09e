"""Any model in: plain state_dicts with ``--arch`` (zoo or ``tv:NAME``), ``edgeprune models``,
graph units in inspect and the prune loop, and pruned non-zoo models that load back as data.

Real torchvision models, real CLI subprocesses for bad inputs (as tests/test_bad_inputs.py),
real ONNX Runtime in the end-to-end build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
import torch
from edgeprune.checkpoint import arch_spec, load_model
from edgeprune.errors import EdgepruneError
from edgeprune.models import create_model, list_architectures
from test_bad_inputs import checkpoint_dict, out, run_row
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DIGITS = ["--input-size", "1,8,8"]


@cache
def _mnv2_weights(num_classes: int = 10, channels: int = 1) -> dict:
    torch.manual_seed(0)
    return create_model("tv:mobilenet_v2", num_classes=num_classes,
                        in_channels=channels).state_dict()


def state_dict_file(tmp: Path, **kw) -> Path:
    path = tmp / "weights.pt"
    torch.save(_mnv2_weights(**kw), path)
    return path


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "toolchain")}
    return subprocess.run([sys.executable, "-m", "edgeprune", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- model files


def test_architectures_list_zoo_and_torchvision_builders():
    names = list_architectures()
    assert "resnet20" in names and "tv:mobilenet_v2" in names and "tv:vit_b_16" in names
    assert not any(n.startswith("tv:") and "rcnn" in n for n in names)  # classification only


def test_models_command_filters(tmp_path):
    r = cli("models", "tv:mobilenet*", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["tv:mobilenet_v2", "tv:mobilenet_v3_large",
                                    "tv:mobilenet_v3_small"]


def test_state_dict_with_arch_loads_the_same_function(tmp_path):
    path = state_dict_file(tmp_path)
    loaded = load_model(path, arch=arch_spec("tv:mobilenet_v2", None, "1,8,8"))
    ref = create_model("tv:mobilenet_v2", num_classes=10, in_channels=1).eval()
    ref.load_state_dict(_mnv2_weights())
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), ref(x))
    assert loaded.info.num_classes == 10  # counted from the classifier's weights
    assert loaded.info.input_shape == (1, 8, 8)


def test_input_size_side_means_three_channels():
    assert arch_spec("tv:resnet18", 5, "64").input_shape == (3, 64, 64)


def test_vit_is_built_for_its_input_size():
    model = create_model("tv:vit_b_16", num_classes=3, image_size=32)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def _bare(extra=(), command="inspect", **kw):
    def build(tmp):
        return [command, state_dict_file(tmp, **kw), *extra]
    return build


def _ckpt_with_arch(tmp):
    path = tmp / "model.pt"
    torch.save(checkpoint_dict(), path)
    return ["export", path, "--out", out(tmp) / "m.onnx", "--arch", "tv:mobilenet_v2"]


BAD = [
    pytest.param(_bare(), "pass --arch NAME", id="state-dict-without-arch"),
    pytest.param(_bare(["--arch", "mobilenet"]), "`edgeprune models` lists", id="unknown-arch"),
    pytest.param(_bare(["--arch", "tv:mobilenet_v3_small", *DIGITS]), "check --arch",
                 id="weights-of-another-arch"),
    pytest.param(_bare(["--arch", "tv:mobilenet_v2", "--num-classes", "100", *DIGITS]),
                 "check --arch, --num-classes", id="num-classes-mismatch"),
    pytest.param(_bare(["--arch", "tv:mobilenet_v2", "--num-classes", "0"]),
                 "--num-classes must be", id="num-classes-zero"),
    pytest.param(_bare(["--num-classes", "10"]), "pass --arch NAME too",
                 id="num-classes-without-arch"),
    pytest.param(_bare(["--arch", "tv:mobilenet_v2", "--input-size", "3,x"]), "--input-size",
                 id="bad-input-size"),
    pytest.param(_bare(["--arch", "tv:mobilenet_v2", "--data", "digits", "--out", "out"],
                       command="prune", channels=3), "shape",
                 id="state-dict-shape-vs-data"),
    pytest.param(_ckpt_with_arch, "drop --arch", id="arch-on-a-checkpoint"),
]


def test_bad_model_inputs_are_one_line_errors(tmp_path):
    """All rows side by side (each is an interpreter start); each must fail with exit 2, one
    line naming what to do, no traceback, --out untouched."""
    dirs = []
    for i in range(len(BAD)):
        d = tmp_path / str(i)
        d.mkdir()
        dirs.append(d)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda a: run_row(a[0].values[0], a[1]), zip(BAD, dirs)))
    for row, (result, before, after) in zip(BAD, results):
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.returncode == 2, (row.id, result.stderr[-800:])
        assert len(lines) == 1 and "Traceback" not in result.stderr, (row.id, result.stderr)
        assert row.values[1] in lines[0], (row.id, lines[0])
        assert before == after, row.id


def test_state_dict_evaluates_through_cli(tmp_path):
    path = state_dict_file(tmp_path)
    r = cli("evaluate", path, "--arch", "tv:mobilenet_v2", "--data", "digits", "--json",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 0.0 <= json.loads(r.stdout)["accuracy"] <= 1.0


# ---------------------------------------------------------------- inspect


class _DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            y = y + self.conv(x)
        return self.fc(y.mean((2, 3)))


def test_untraceable_model_suggests_torch_export_or_method_none():
    from edgeprune.units import prunable

    with pytest.raises(EdgepruneError, match="torch.export.*--method none"):
        prunable(_DataDependent(), (3, 8, 8))


def test_inspect_says_why_a_model_has_no_units():
    from edgeprune.checkpoint import LoadedModel, ModelInfo
    from edgeprune.cli.inspect import describe

    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    report = describe(LoadedModel(plain, ModelInfo("Sequential", 2, (3, 8, 8))))
    assert report["totals"]["units"] == 0 and "no skip-unit found" in report["why_no_units"]
    report = describe(LoadedModel(_DataDependent(), ModelInfo("DataDependent", 2, (3, 8, 8))))
    assert "torch.fx cannot trace" in report["why_no_units"]


def test_inspect_lists_graph_units_of_a_state_dict(tmp_path):
    path = state_dict_file(tmp_path)
    r = cli("inspect", path, "--arch", "tv:mobilenet_v2", *DIGITS, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["found_on"] == "graph" and report["totals"]["units"] == 10
    assert report["units"][0]["name"] == "features.3" and report["units"][0]["params"] > 0


# ---------------------------------------------------------------- prune and build


def _build(tmp: Path, weights: Path, data: str, *extra) -> subprocess.CompletedProcess:
    return cli("build", weights, "--arch", "tv:mobilenet_v2", "--data", data, "--target",
               "jetson-orin-nano", "--precision", "fp32", "--out", tmp / "out",
               "--no-measure-host", *extra, cwd=tmp)


def test_build_of_a_torchvision_state_dict_prunes_on_the_graph_and_loads_back(tmp_path):
    """Small form of the README's build: an untrained tv:mobilenet_v2 on digits, one MSPIC
    stage without fine-tuning; ε = 1 so that the stage must remove units."""
    r = _build(tmp_path, state_dict_file(tmp_path), "digits", "--stages", "1",
               "--finetune-epochs", "0", "--samples", "100", "--resolutions", "0.3",
               "--max-error-increase", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    built = tmp_path / "out"
    mspic = json.loads((built / "mspic.json").read_text())
    removed = mspic["summary"]["removed_units"]
    assert removed and mspic["summary"]["units_after"] == 10 - len(removed)
    assert mspic["summary"]["params_after"] < mspic["summary"]["params_before"]
    back = load_model(built / "pruned.pt")  # no --arch, no --trust-model: replayed as data
    assert back.info.arch == "tv:mobilenet_v2" and back.info.removed_units == removed
    from edgeprune.units import list_units

    assert len(list_units(back.model)) == 10 - len(removed)
    report = json.loads((built / "report.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert "pruned" in " ".join(names)
    pruned = next(v for v in report["variants"] if v["name"].startswith("pruned"))
    original = next(v for v in report["variants"] if v["name"].startswith("original"))
    assert pruned["params"] < original["params"] and pruned["macs"] < original["macs"]
    assert pruned["latency_ms"]["target_estimated"] > 0


@pytest.mark.slow
def test_full_build_of_mobilenet_v2_trained_on_the_cifar_subset(tmp_path, cifar_subset_path):
    """The README's run in brief: train tv:mobilenet_v2 a few epochs, save a plain state_dict,
    build it with MSPIC for jetson-orin-nano."""
    data = f"npz:{cifar_subset_path}"
    r = cli("train", "--arch", "tv:mobilenet_v2", "--data", data, "--epochs", "3", "--out",
            tmp_path / "ckpt.pt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    weights = tmp_path / "weights.pt"
    torch.save(torch.load(tmp_path / "ckpt.pt", weights_only=True)["state_dict"], weights)
    r = _build(tmp_path, weights, data, "--stages", "2", "--finetune-epochs", "1",
               "--samples", "500")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "mspic.json").read_text())["summary"]
    assert summary["units_before"] == 10
    back = load_model(tmp_path / "out" / "pruned.pt")
    assert back.info.removed_units == summary["removed_units"]
