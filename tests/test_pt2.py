"""torch.export archives (.pt2): loading without unpickling, what works on the loaded program,
pruned.pt2 beside pruned.pt, bad and hostile archives, and ``--method l1`` on graph units.

Real torch.export round trips of small models (ResNet-20 at 16×16, a hand-written CNN,
torchvision's MobileNetV2 at 8×8 digits); hostile archives are real archives with one entry
changed, and the tests check that their payloads would run under torch.export.load alone.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from edgeprune import pt2
from edgeprune.checkpoint import ModelInfo, load_model
from edgeprune.complexity import model_complexity
from edgeprune.errors import EdgepruneError
from edgeprune.models import create_model
from test_bad_inputs import run_row
from torch import nn

SHAPE = (3, 16, 16)


def _resnet20() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=10, in_channels=3, image_size=16).eval()


def _info(**kw) -> ModelInfo:
    fields = {"arch": "resnet20", "num_classes": 10, "input_shape": SHAPE,
              "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.25),
              "class_names": [f"c{i}" for i in range(10)], "removed_units": []}
    return ModelInfo(**{**fields, **kw})


@pytest.fixture(scope="module")
def resnet20_pt2(tmp_path_factory) -> tuple[nn.Module, Path]:
    model = _resnet20()
    path = pt2.save_pt2(tmp_path_factory.mktemp("pt2") / "r20.pt2", model, _info())
    return model, path


class SmallNet(nn.Module):
    """A hand-written classifier, exported the way a user would: batch 1, no metadata."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc((y + x.mean(1, keepdim=True)).mean((2, 3)))


# ---------------------------------------------------------------- loading


def test_edgeprune_archive_loads_with_its_metadata_and_outputs(resnet20_pt2):
    model, path = resnet20_pt2
    loaded = load_model(path)
    assert loaded.info == _info()
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), model(x), atol=1e-5)
    assert model_complexity(loaded.model, SHAPE) == model_complexity(model, SHAPE)


def test_plain_torch_export_archive_with_batch_one(tmp_path):
    torch.manual_seed(0)
    model = SmallNet().eval()
    path = tmp_path / "user.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 12, 12),)), path)
    loaded = load_model(path)
    assert loaded.info.input_shape == (3, 12, 12) and loaded.info.num_classes == 4
    assert loaded.info.arch == "pt2:user" and loaded.model.batch == 1
    x = torch.randn(3, 3, 12, 12)  # run in slices of the exported batch size
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), model(x), atol=1e-5)
    macs = model_complexity(loaded.model, (3, 12, 12)).macs
    assert macs == 12 * 12 * 8 * 27 + 8 * 4


def test_exported_program_refuses_units_and_training(resnet20_pt2):
    from edgeprune.cli.inspect import describe
    from edgeprune.units import prunable

    loaded = load_model(resnet20_pt2[1])
    with pytest.raises(EdgepruneError, match="--method none"):
        prunable(loaded.model, SHAPE)
    report = describe(loaded)
    assert report["totals"]["units"] == 0 and "torch.export program" in report["why_no_units"]
    with pytest.raises(EdgepruneError, match="cannot be trained"):
        loaded.model.train()
    assert loaded.model.eval() is loaded.model


def test_onnx_export_of_an_archive_matches_the_original(tmp_path):
    from edgeprune.export import export_onnx

    torch.manual_seed(0)
    model = SmallNet().eval()
    info = ModelInfo("SmallNet", 4, (3, 12, 12))
    path = pt2.save_pt2(tmp_path / "small.pt2", model, info)
    ours = export_onnx(load_model(path).model, (3, 12, 12), tmp_path / "from_pt2.onnx")
    theirs = export_onnx(model, (3, 12, 12), tmp_path / "original.onnx")
    assert ours.nodes == theirs.nodes and ours.max_abs_diff < 1e-4


# ---------------------------------------------------------------- pruned.pt2


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, or its strided 1×1 projection; ReLU after."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.b, self.bn_b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout)) if stride > 1 else None)

    def forward(self, x):
        y = self.bn_b(self.b(torch.relu(self.bn_a(self.a(x)))))
        return torch.relu(y + (x if self.short is None else self.short(x)))


class TinyResNet(nn.Module):
    """A hand-written residual network for 1×8×8 digits, pruned on its traced graph."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(Block(8, 8), Block(8, 8), Block(8, 16, 2), Block(16, 16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


@torch.no_grad()
def _l1(module: nn.Module, skip: str | None = None) -> float:
    return sum(float(p.abs().sum()) for n, p in module.named_parameters()
               if not (skip and n.startswith(skip)))


def test_l1_on_graph_units_and_pruned_pt2(tmp_path, digits):
    """--method l1 on a model pruned on its traced graph removes the units whose branches have
    the smallest L1 norms (a projection's shortcut not counted); pruned.pt2 is written beside
    pruned.pt and loads back to its outputs."""
    from edgeprune.checkpoint import LoadedModel, data_for_model
    from edgeprune.graphunits import branch_l1
    from edgeprune.prune import PruneConfig, prune_model
    from edgeprune.units import list_units, prunable

    torch.manual_seed(0)
    model = TinyResNet().eval()
    with torch.no_grad():  # the projection unit's branch the lightest by far
        for name, p in model.blocks[2].named_parameters():
            if not name.startswith("short."):
                p.mul_(0.01)
    loaded = LoadedModel(model, ModelInfo("TinyResNet", 10, (1, 8, 8)))
    graph = prunable(model, (1, 8, 8))
    norms = {u.name: branch_l1(graph, u) for u in list_units(graph)}
    assert list(norms) == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    for i, block in enumerate(model.blocks):
        expected = _l1(block, "short.")
        assert norms[f"blocks.{i}"] == pytest.approx(expected, rel=1e-6)
    assert _l1(model.blocks[2]) > norms["blocks.2"]  # the kept shortcut is not counted
    data = data_for_model(loaded, digits)
    config = PruneConfig(method="l1", counts=[2], stages=1, finetune_epochs=0, samples=50)
    result = prune_model(loaded, data, config, tmp_path)
    assert sorted(result.summary["removed_units"]) == sorted(sorted(norms, key=norms.get)[:2])
    assert "blocks.2" in result.summary["removed_units"]
    exported = load_model(tmp_path / "pruned.pt2")  # no class, no --trust-model, no pickle
    assert exported.info.removed_units == result.summary["removed_units"]
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(exported.model(x), result.loaded.model(x), atol=1e-5)
    assert model_complexity(exported.model, (1, 8, 8)) == model_complexity(
        result.loaded.model, (1, 8, 8))


@pytest.mark.slow
def test_pruned_pt2_of_a_torchvision_model_matches_the_replayed_checkpoint(tmp_path, digits):
    from edgeprune.checkpoint import LoadedModel, data_for_model
    from edgeprune.prune import PruneConfig, prune_model

    torch.manual_seed(0)
    model = create_model("tv:mobilenet_v2", num_classes=10, in_channels=1).eval()
    loaded = LoadedModel(model, ModelInfo("tv:mobilenet_v2", 10, (1, 8, 8)))
    config = PruneConfig(method="l1", counts=[2], stages=1, finetune_epochs=0, samples=50)
    prune_model(loaded, data_for_model(loaded, digits), config, tmp_path)
    replayed, exported = load_model(tmp_path / "pruned.pt"), load_model(tmp_path / "pruned.pt2")
    assert exported.info == replayed.info and len(replayed.info.removed_units) == 2
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(exported.model(x), replayed.model(x), atol=1e-5)


def test_a_model_torch_export_refuses_is_a_warning(tmp_path, caplog):
    class Branchy(nn.Module):  # data-dependent control flow: torch.export refuses it
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with caplog.at_level("WARNING", logger="edgeprune"):
        assert pt2.write_beside(tmp_path / "pruned.pt", Branchy(), _info()) is None
    assert "did not write pruned.pt2" in caplog.text
    assert not list(tmp_path.iterdir())  # no temporary left


# ---------------------------------------------------------------- bad and hostile archives


def _rewrite(src: Path, dst: Path, changes: dict[str, bytes],
             compression: int = zipfile.ZIP_STORED) -> Path:
    """``src`` with entries (named below the root folder) replaced, or added, by ``changes``."""
    with zipfile.ZipFile(src) as z:
        root = z.namelist()[0].split("/", 1)[0]
        entries = {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}
    entries.update(changes)
    with zipfile.ZipFile(dst, "w", compression) as z:
        for name, data in entries.items():
            z.writestr(f"{root}/{name}", data)
    return dst


class _Touch:
    """Unpickling this creates the file ``path``: stands for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def _pickled_weight(src: Path, dst: Path, marker: Path) -> Path:
    with zipfile.ZipFile(src) as z:
        name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(z.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    buf = io.BytesIO()
    torch.save(_Touch(marker), buf)
    return _rewrite(src, dst, {
        "data/weights/model_weights_config.json": json.dumps(config).encode(),
        f"data/weights/{first['path_name']}": buf.getvalue()})


def test_hostile_pickles_in_an_archive_never_run(resnet20_pt2, tmp_path):
    _, good = resnet20_pt2
    marker = tmp_path / "ran"
    sample = _rewrite(good, tmp_path / "sample.pt2",
                      {"data/sample_inputs/model.pt": pickle.dumps(_Touch(marker), protocol=2)})
    # torch.export.load alone runs the payload (weights_only=True fails, then it retries)
    with pytest.raises(Exception):  # noqa: B017  (the payload is no valid input)
        torch.export.load(sample)
    assert marker.exists(), "the hostile sample input did not run under torch alone"
    marker.unlink()
    with pytest.raises(EdgepruneError, match="sample inputs are not plain tensors"):
        load_model(sample)
    weight = _pickled_weight(good, tmp_path / "weight.pt2", marker)
    with pytest.raises(EdgepruneError, match="stored as a pickle"):
        load_model(weight)
    opaque = _rewrite(good, tmp_path / "opaque.pt2",
                      {"data/constants/opaque_obj_0": pickle.dumps(_Touch(marker))})
    with pytest.raises(EdgepruneError, match="opaque_obj_0"):
        load_model(opaque)
    assert not marker.exists()


def test_shape_expressions_are_screened(resnet20_pt2, tmp_path):
    _, good = resnet20_pt2
    with zipfile.ZipFile(good) as z:
        program = z.read(next(n for n in z.namelist() if n.endswith("models/model.json")))
    assert b"Symbol('s" in program  # the dynamic batch is a sympy expression sympify reads
    load_model(_rewrite(good, tmp_path / "same.pt2", {"models/model.json": program}))
    evil = program.replace(b"Symbol('s", b"__import__('os').getcwd() or Symbol('s", 1)
    with pytest.raises(EdgepruneError, match="shape expression"):
        load_model(_rewrite(good, tmp_path / "evil.pt2", {"models/model.json": evil}))
    assert pt2._safe_expression("Mul(Integer(2), Symbol('s77', positive=True, integer=True))")
    assert not pt2._safe_expression("Symbol('s1').__class__")
    assert not pt2._safe_expression("eval('1')")


def _meta(good: Path, tmp: Path, name: str, text) -> Path:
    data = text if isinstance(text, bytes) else json.dumps(text).encode()
    return _rewrite(good, tmp / f"{name}.pt2", {"extra/edgeprune.json": data})


@pytest.mark.parametrize("name,meta,match", [
    ("not-json", b"{arch: resnet20", "edgeprune.json is not valid JSON"),
    ("a-list", [1, 2], "must be a JSON object"),
    ("classes-text", {"arch": "resnet20", "num_classes": "ten"}, "num_classes must be"),
    ("no-arch", {"num_classes": 10}, "lacks 'arch'"),
    ("shape-differs", {"arch": "resnet20", "num_classes": 10, "input_shape": [3, 32, 32]},
     "but the program takes"),
    ("classes-differ", {"arch": "resnet20", "num_classes": 7}, "outputs 10 classes"),
    ("std-zero", {"arch": "resnet20", "num_classes": 10,
                  "normalization": {"mean": [0, 0, 0], "std": [1, 0, 1]}}, "std must be"),
    ("other-format", {"format": "onnx", "arch": "resnet20", "num_classes": 10}, "format"),
])
def test_bad_metadata_is_one_clear_error(resnet20_pt2, tmp_path, name, meta, match):
    with pytest.raises(EdgepruneError, match=match):
        load_model(_meta(resnet20_pt2[1], tmp_path, name, meta))


def test_broken_archives_are_one_clear_error(resnet20_pt2, tmp_path):
    _, good = resnet20_pt2
    data = good.read_bytes()
    cases = {
        "truncated": (data[: len(data) // 2], "corrupt or truncated"),
        "not-a-zip": (b"\x80\x02hello", "corrupt or truncated"),
        "text": (b"hello world", "not a PyTorch model file"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / f"{name}.pt2").write_bytes(content)
        with pytest.raises(EdgepruneError, match=match):
            load_model(tmp_path / f"{name}.pt2")
    ckpt = tmp_path / "checkpoint.pt2"  # torch.save's zip under a .pt2 name
    torch.save({"arch": "resnet20"}, ckpt)
    with pytest.raises(EdgepruneError, match="not a torch.export archive"):
        load_model(ckpt)
    broken = _rewrite(good, tmp_path / "program.pt2",
                      {"models/model.json": b'{"graph_module": 1}'})
    with pytest.raises(EdgepruneError, match="torch.export cannot load the program"):
        load_model(broken)
    deflated = _rewrite(good, tmp_path / "deflated.pt2", {}, zipfile.ZIP_DEFLATED)
    with pytest.raises(EdgepruneError, match="compressed entries"):
        load_model(deflated)
    with pytest.raises(EdgepruneError, match="drop --arch"):
        from edgeprune.checkpoint import arch_spec

        load_model(good, arch=arch_spec("resnet20"))


def test_training_mode_archive_is_refused(tmp_path):
    path = tmp_path / "train.pt2"
    torch.export.save(torch.export.export(SmallNet().train(), (torch.zeros(2, 3, 8, 8),)), path)
    with pytest.raises(EdgepruneError, match="training mode"):
        load_model(path)


def test_bad_archives_through_the_cli(resnet20_pt2, tmp_path):
    """Exit 2, one line, no traceback (each row is an interpreter start, run side by side)."""
    _, good = resnet20_pt2
    marker = tmp_path / "ran"
    rows = [
        (lambda t: ["inspect", _write(t / "m.pt2", good.read_bytes()[:5000])],
         "corrupt or truncated"),
        (lambda t: ["inspect", _pickled_weight(good, t / "m.pt2", marker)],
         "stored as a pickle"),
        (lambda t: ["export", _meta(good, t, "m", {"arch": 3, "num_classes": 10}), "--out",
                    t / "out" / "m.onnx"], "arch must be"),
    ]
    dirs = [tmp_path / str(i) for i in range(len(rows))]
    for d in dirs:
        d.mkdir()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda a: run_row(a[0][0], a[1]), zip(rows, dirs)))
    for (_, match), (result, before, after) in zip(rows, results):
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.returncode == 2, result.stderr[-800:]
        assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, lines
        assert match in lines[0] and before == after
    assert not marker.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- --method none end to end


@pytest.mark.slow
def test_build_with_method_none_from_an_archive(tmp_path, resnet20_digits_path):
    from edgeprune import api

    trained = load_model(resnet20_digits_path)
    path = pt2.save_pt2(tmp_path / "model.pt2", trained.model, trained.info)
    result = api.build_model(api.BuildConfig(
        target="jetson-orin-nano", model=path, data="digits", out=tmp_path / "out",
        precision="int8", method="none", measure_host=False))
    assert [v["name"] for v in result.variants] == ["original", "original-int8"]
    from edgeprune.checkpoint import data_for_model
    from edgeprune.train import evaluate

    data = data_for_model(trained, api.load_data("digits"))
    assert result.variants[0]["accuracy"] == pytest.approx(
        evaluate(trained.model, data, "test").accuracy)
    assert (tmp_path / "out" / "report.html").is_file()
