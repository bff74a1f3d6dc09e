"""Bad inputs through the real command line, one table.

Every row runs ``python -m edgeprune ...`` in a subprocess and must end with exit code 2, exactly
one non-empty line on stderr, no traceback anywhere, and the ``--out`` path exactly as it was (a
folder's listing and modification times; a path that did not exist must still not exist).

A row is ``pytest.param(builder, "text the error must contain", id=...)``. A builder makes the
bad input in a fresh folder ``tmp`` and returns the command's arguments; ``out(tmp)`` is the
path the table watches. The factories below (``ckpt``, ``npz``, ``images``, ...) make most rows
one line: ``ckpt(num_classes=0)`` is a checkpoint whose num_classes is 0, given to ``export``.

Each run costs an interpreter start and torch's import (≈3 s of CPU), so the rows run side by
side, as many at a time as there are CPUs, and variants of a defect that an earlier row already
covers are marked slow.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
slow = pytest.mark.slow


# ---------------------------------------------------------------- running the CLI


def out(tmp: Path) -> Path:
    """The output path a row's command writes to, and that must be left unchanged."""
    return tmp / "out"


def snapshot(path: Path):
    """What a failed command must not change: each entry's relative path, size and mtime."""
    if not path.exists():
        return None
    entries = [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]
    return [(str(p.relative_to(path)), p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in entries]


def run_row(build, tmp: Path):
    args = [str(a) for a in build(tmp)]
    before = snapshot(out(tmp))
    env = {**os.environ, "PYTHONPATH": str(REPO / "toolchain")}
    result = subprocess.run([sys.executable, "-m", "edgeprune", *args], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=300)
    return result, before, snapshot(out(tmp))


# ---------------------------------------------------------------- model files


@cache
def _weights(arch: str, num_classes: int, channels: int) -> dict:
    from edgeprune.models import create_model

    torch.manual_seed(0)
    return create_model(arch, num_classes=num_classes, in_channels=channels).state_dict()


def checkpoint_dict(**fields) -> dict:
    """A valid edgeprune checkpoint of an untrained ResNet-20 for 1×8×8 digits, with ``fields``
    replaced (``state_dict=None`` and the like keep their literal value)."""
    ckpt = {"arch": "resnet20", "num_classes": 10, "state_dict": _weights("resnet20", 10, 1),
            "input_shape": [1, 8, 8], "normalization": {"mean": [0.3], "std": [0.4]},
            "class_names": [str(i) for i in range(10)], "removed_units": []}
    return {**ckpt, **fields}


def save_model(tmp: Path, obj=None, name: str = "model.pt", **fields) -> Path:
    path = tmp / name
    torch.save(checkpoint_dict(**fields) if obj is None else obj, path)
    return path


def ckpt(command: str = "export", **fields):
    """A checkpoint with ``fields`` replaced, given to ``command``."""
    return lambda tmp: model_args(command, save_model(tmp, **fields), tmp)


def model_args(command: str, model: Path, tmp: Path) -> list:
    if command == "export":
        return ["export", model, "--out", out(tmp) / "model.onnx"]
    if command == "evaluate":
        return ["evaluate", model, "--data", "digits"]
    return [command, model]


def raw_model(content: bytes, name: str = "model.pt", command: str = "export"):
    """A model file holding ``content`` bytes."""
    def build(tmp):
        (tmp / name).write_bytes(content)
        return model_args(command, tmp / name, tmp)
    return build


def with_weights(key: str, value: float, command: str = "export"):
    """A checkpoint whose tensor ``key`` has one entry set to ``value`` (NaN, inf)."""
    def build(tmp):
        state = {k: v.clone() for k, v in _weights("resnet20", 10, 1).items()}
        state[key].view(-1)[0] = value
        return model_args(command, save_model(tmp, state_dict=state), tmp)
    return build


def without_weight(key: str):
    return ckpt(state_dict={k: v for k, v in _weights("resnet20", 10, 1).items() if k != key})


def truncated_model(tmp):
    path = save_model(tmp)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return model_args("export", path, tmp)


def pickled(*extra: str, command: str = "export"):
    """A whole pickled module (torch classes only, so the subprocess can unpickle it) that takes
    only 1×8×8 images and records no input shape."""
    def build(tmp):
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 6 * 6, 10))
        return [*model_args(command, save_model(tmp, net), tmp), *extra]
    return build


# ---------------------------------------------------------------- data sets


def train_on(spec: str, tmp: Path) -> list:
    return ["train", "--arch", "resnet20", "--data", spec, "--epochs", "1", "--out", out(tmp)]


def _images(n: int, shape=(1, 8, 8)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_npz(tmp: Path, **arrays) -> str:
    """An npz data set (40 train, 10 test 1×8×8 images, labels 0..9) with ``arrays`` replaced or,
    given as None, left out; returns its data spec."""
    good = {"x_train": _images(40), "y_train": np.arange(40) % 10, "x_test": _images(10),
            "y_test": np.arange(10)}
    np.savez(tmp / "data.npz", **{k: v for k, v in {**good, **arrays}.items() if v is not None})
    return f"npz:{tmp / 'data.npz'}"


def npz(**arrays):
    """``write_npz(**arrays)``, trained on with ``train``."""
    return lambda tmp: train_on(write_npz(tmp, **arrays), tmp)


def npz_file(content: bytes):
    def build(tmp):
        (tmp / "data.npz").write_bytes(content)
        return train_on(f"npz:{tmp / 'data.npz'}", tmp)
    return build


def npy_as_npz(tmp):
    np.save(tmp / "data.npy", _images(4))
    return train_on(f"npz:{tmp / 'data.npy'}", tmp)


def cifar(**batch):
    """CIFAR-10 python batches (20 images each) whose dict has ``batch``'s keys replaced or, given
    as None, removed; ``batch=...`` replaces the whole object."""
    def build(tmp):
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            good = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                    b"labels": list(range(10)) * 2}
            d = {k: v for k, v in {**good, **{k.encode(): v for k, v in batch.items()}}.items()
                 if v is not None}
            (tmp / name).write_bytes(pickle.dumps(d.get(b"batch", d)))
        return train_on(f"cifar10:{tmp}", tmp)
    return build


def cifar_is_a_file(tmp):
    (tmp / "data_batch_1").write_bytes(b"x")
    return train_on(f"cifar10:{tmp / 'data_batch_1'}", tmp)


def _png(path: Path, size: int = 12) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def images(classes=("cat", "dog"), val=None, bad: dict | None = None, model_classes=None):
    """An imagefolder data set (3 train and 1 val 12×12 RGB PNG per class; ``val`` other class
    folders for val) with ``bad`` {relative path: bytes or a callable of the good bytes} written
    over it. With ``model_classes`` a matching model is pruned on it, else ``train`` runs."""
    def build(tmp):
        root = tmp / "images"
        for cls in classes:
            for i in range(3):
                _png(root / "train" / cls / f"{i}.png")
        for cls in val or classes:
            _png(root / "val" / cls / "0.png")
        for rel, content in (bad or {}).items():
            f = root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(content(f.read_bytes()) if callable(content) else content)
        spec = f"imagefolder:{root}"
        if model_classes is None:
            return train_on(spec, tmp)
        model = save_model(tmp, state_dict=_weights("resnet20", len(model_classes), 3),
                           num_classes=len(model_classes), input_shape=[3, 12, 12],
                           normalization=None, class_names=list(model_classes))
        return ["prune", model, "--data", spec, "--out", out(tmp)]
    return build


def existing_out(build):
    """``build`` with its output folder already holding an earlier run's file."""
    def wrapped(tmp):
        out(tmp).mkdir()
        (out(tmp) / "earlier.json").write_text("{}")
        return build(tmp)
    return wrapped


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


# ---------------------------------------------------------------- the table

STRAY = np.r_[np.arange(39) % 10, 99]  # labels 0..9 and one 99: a 100-class model by mistake

BAD_INPUTS = [
    # model files that are not PyTorch checkpoints
    pytest.param(raw_model(b"hello, I am text\n"), "not a PyTorch model file", id="model-text"),
    pytest.param(raw_model(np.random.default_rng(0).bytes(64), command="inspect"),
                 "not a PyTorch model file", id="model-random-bytes", marks=slow),
    pytest.param(raw_model(b""), "is empty", id="model-empty", marks=slow),
    pytest.param(lambda tmp: ["inspect", tmp], "is a directory", id="model-is-a-directory",
                 marks=slow),
    pytest.param(lambda tmp: model_args("export", tmp / "nope.pt", tmp), "does not exist",
                 id="model-missing", marks=slow),
    pytest.param(raw_model(b"\x08\x07\x12\x07pytorch", name="model.onnx", command="evaluate"),
                 "ONNX file", id="model-onnx-given-as-pt", marks=slow),
    pytest.param(truncated_model, "corrupt or truncated", id="model-truncated", marks=slow),
    pytest.param(raw_model(b"caf\xc3\xa9", name="mod\u00e8le \u2603.pt"),
                 "not a PyTorch model file", id="model-unicode-name", marks=slow),
    pytest.param(lambda tmp: model_args("export", save_model(tmp, [1, 2, 3]), tmp),
                 "neither an edgeprune checkpoint", id="model-a-list", marks=slow),
    pytest.param(lambda tmp: model_args("export", save_model(tmp, _weights("resnet20", 10, 1)),
                                        tmp), "bare weights", id="model-bare-state-dict",
                 marks=slow),
    # checkpoint fields
    pytest.param(with_weights("conv1.weight", float("nan")), "NaN weights", id="ckpt-nan"),
    pytest.param(with_weights("bn1.running_var", float("inf"), "inspect"), "infinite weights",
                 id="ckpt-inf", marks=slow),
    pytest.param(ckpt(num_classes="ten"), "num_classes", id="ckpt-num-classes-text"),
    pytest.param(ckpt(num_classes=0), "num_classes", id="ckpt-num-classes-0", marks=slow),
    pytest.param(ckpt(num_classes=10**12), "num_classes", id="ckpt-num-classes-huge", marks=slow),
    pytest.param(ckpt(input_shape=[8, 8]), "input_shape", id="ckpt-input-shape-2d"),
    pytest.param(ckpt("inspect", input_shape=[1, -8, 8]), "input_shape",
                 id="ckpt-input-shape-negative", marks=slow),
    pytest.param(ckpt("inspect", input_shape=[1, 10**9, 10**9]), "input_shape",
                 id="ckpt-input-shape-huge", marks=slow),
    pytest.param(ckpt(state_dict=[1, 2]), "state_dict must map", id="ckpt-state-dict-list"),
    pytest.param(ckpt(arch="resnet21"), "unknown architecture", id="ckpt-unknown-arch", marks=slow),
    pytest.param(ckpt(arch=None), "arch must be", id="ckpt-arch-none", marks=slow),
    pytest.param(without_weight("fc.weight"), "1 missing (e.g. fc.weight)",
                 id="ckpt-missing-key", marks=slow),
    pytest.param(ckpt(arch="resnet32"), "do not fit architecture 'resnet32'",
                 id="ckpt-other-arch", marks=slow),
    pytest.param(ckpt(normalization={"mean": [0.3], "std": [0.0]}), "std must be positive",
                 id="ckpt-std-zero", marks=slow),
    pytest.param(ckpt(class_names=["a", "b"]), "class_names has 2 names",
                 id="ckpt-class-names-count", marks=slow),
    pytest.param(ckpt(removed_units=["layer9.0"]), "no unit 'layer9.0'",
                 id="ckpt-removed-unit-unknown", marks=slow),
    pytest.param(existing_out(lambda tmp: ["export", save_model(tmp), "--out", out(tmp)]),
                 "is a folder", id="export-out-is-a-folder", marks=slow),
    pytest.param(existing_out(lambda tmp: ["export", save_model(tmp), "--out",
                                           out(tmp) / "earlier.json" / "m.onnx"]),
                 "is a file, not a folder", id="export-out-under-a-file", marks=slow),
    # pickled modules
    pytest.param(pickled(), "--trust-model", id="pickled-untrusted", marks=slow),
    pytest.param(pickled("--trust-model"), "--input-shape", id="pickled-export-no-shape"),
    pytest.param(pickled("--trust-model", command="inspect"), "--input-shape",
                 id="pickled-inspect-not-3x32x32"),
    pytest.param(pickled("--trust-model", "--input-shape", "1,8", command="inspect"),
                 "three numbers", id="pickled-input-shape-malformed", marks=slow),
    pytest.param(pickled("--trust-model", "--input-shape", "1,9,9"), "cannot take input",
                 id="pickled-input-shape-wrong", marks=slow),
    # npz data
    pytest.param(npz(y_train=np.arange(39) % 10), "40 images but 39 labels",
                 id="npz-length-mismatch"),
    pytest.param(npz(y_train=STRAY), "is the largest label, 99, a stray",
                 id="npz-stray-label"),
    pytest.param(npz(y_train=np.arange(40) % 10 + 0.5), "not a whole number",
                 id="npz-fractional-labels"),
    pytest.param(npz(y_train=np.array([str(i % 10) for i in range(40)])), "must be integers",
                 id="npz-string-labels", marks=slow),
    pytest.param(npz(y_train=np.eye(10)[np.arange(40) % 10]), "one-hot",
                 id="npz-one-hot-labels", marks=slow),
    pytest.param(npz(y_train=np.r_[np.arange(39) % 10, -1]), "label -1 is outside",
                 id="npz-negative-label", marks=slow),
    pytest.param(npz(y_test=np.r_[np.arange(9), 12]), "test label 12 is outside",
                 id="npz-unknown-test-label", marks=slow),
    pytest.param(npz(x_train=_images(1), y_train=np.array([0])), "at least two",
                 id="npz-one-image"),
    pytest.param(npz(x_train=_images(10), y_train=np.arange(10)), "at least 2",
                 id="npz-one-image-per-class", marks=slow),
    pytest.param(npz(y_test=None), "lacks the keys", id="npz-missing-key", marks=slow),
    pytest.param(npz(x_train=_images(40).astype(np.float32)), "uint8", id="npz-float-images",
                 marks=slow),
    pytest.param(npz(x_train=_images(40).reshape(40, 64)), "images must be",
                 id="npz-flat-images", marks=slow),
    pytest.param(npz(x_test=_images(0), y_test=np.arange(0)), "test split is empty",
                 id="npz-empty-test", marks=slow),
    pytest.param(npz_file(b"x_train,y_train\n1,2\n"), "not a readable .npz", id="npz-csv",
                 marks=slow),
    pytest.param(npy_as_npz, "single array (.npy)", id="npz-is-npy", marks=slow),
    # training
    pytest.param(lambda tmp: [*train_on("digits", tmp), "--device", "cuda:99"],
                 "--device cuda:99", id="train-device-absent", marks=slow),
    pytest.param(lambda tmp: [*train_on("digits", tmp), "--device", "bogus"],
                 "not a torch device", id="train-device-bogus", marks=slow),
    pytest.param(lambda tmp: ["train", "--arch", "densenet121", "--data", "digits", "--out",
                              out(tmp)], "cannot take input of shape (1, 8, 8)",
                 id="train-arch-too-deep-for-8x8", marks=slow),
    pytest.param(lambda tmp: ["prune", save_model(tmp), "--data", "digits", "--out", out(tmp),
                              "--device", "cuda:99"], "--device cuda:99",
                 id="prune-device-absent", marks=slow),
    pytest.param(lambda tmp: ["build", save_model(tmp), "--target", "jetson-nano", "--data",
                              write_npz(tmp, y_train=STRAY), "--out", out(tmp)], "a stray",
                 id="build-stray-label", marks=slow),
    # CIFAR-10 batches
    pytest.param(cifar(data=np.zeros((20, 3000), np.uint8)), "rows of 3072",
                 id="cifar-row-width"),
    pytest.param(cifar(labels=None), "lacks labels", id="cifar-no-labels"),
    pytest.param(cifar(labels=[0] * 19), "20 images but 19 labels", id="cifar-label-count",
                 marks=slow),
    pytest.param(cifar(batch=[1, 2]), "holds a list", id="cifar-not-a-dict", marks=slow),
    pytest.param(cifar_is_a_file, "is a file", id="cifar-dir-is-a-file", marks=slow),
    # image folders
    pytest.param(images(bad={"train/cat/9.png": b"not an image"}), "9.png is not a readable "
                 "image", id="imagefolder-non-image"),
    pytest.param(images(bad={"train/dog/0.png": _half}), "0.png is not a readable image",
                 id="imagefolder-truncated-png"),
    pytest.param(images(bad={"train/emu/readme.txt": b"no pngs"}), "has no images (PNG, JPEG",
                 id="imagefolder-empty-class", marks=slow),
    pytest.param(images(val=("cat", "dog", "cow")), "that train lacks",
                 id="imagefolder-val-only-class", marks=slow),
    pytest.param(existing_out(images(classes=("cat", "cow"), model_classes=("cat", "dog"))),
                 "only in the model: dog; only in the data: cow", id="imagefolder-other-classes"),
    pytest.param(images(model_classes=("dog", "cat")), "the labels would be swapped",
                 id="imagefolder-class-order"),
]


# ---------------------------------------------------------------- the pipeline's options (core)


def build_with(*extra, config: str | None = None, model: bool = True):
    """``edgeprune build`` of an untrained digits checkpoint into out(tmp), with ``extra``
    arguments and, given ``config``, an edgeprune.toml holding that text."""
    def make(tmp):
        args = ["build", save_model(tmp)] if model else ["build", tmp / "missing.pt"]
        if config is not None:
            (tmp / "edgeprune.toml").write_text(config)
            args += ["--config", tmp / "edgeprune.toml"]
        if "--out" not in extra and "out =" not in (config or ""):
            args += ["--out", out(tmp)]
        return [*args, *[a(tmp) if callable(a) else a for a in extra]]
    return make


def fp16_build(*extra, **kw):
    """A build that would otherwise run (jetson-orin-nano, fp16, no pruning, no data)."""
    return build_with("--target", "jetson-orin-nano", "--precision", "fp16", "--method", "none",
                      *extra, **kw)


def cmd_with_model(command, *extra):
    def make(tmp):
        return [command, save_model(tmp), *extra, "--out", out(tmp)]
    return make


def with_onnx(command, *extra):
    def make(tmp):
        from onnx_graphs import conv_relu

        return [command, conv_relu(tmp / "m.onnx"), *extra, "--out", out(tmp)]
    return make


def out_is_a_file(tmp):
    out(tmp).write_text("a file, not a folder")
    return fp16_build()(tmp)


def out_parent_is_a_file(tmp):
    out(tmp).write_text("a file, not a folder")
    return fp16_build("--out", out(tmp) / "sub")(tmp)


def damaged_state(tmp):
    out(tmp).mkdir()
    (out(tmp) / "build-state.json").write_text('{"fingerprint": {"opt')
    return fp16_build("--resume")(tmp)


def target_file(text_change=None):
    def make(tmp):
        text = (REPO / "targets" / "jetson-nano.toml").read_text()
        (tmp / "board.toml").write_text(text_change(text) if text_change else text)
        return build_with("--target-file", tmp / "board.toml", "--precision", "fp16",
                          "--method", "none")(tmp)
    return make


CORE_INPUTS = [
    # a config file never turns on unpickling, and every value has its field's type
    pytest.param(fp16_build(config='trust_model = "false"\n'), "trust_model cannot be set in "
                 "a config file", id="config-trust-model-string"),
    pytest.param(fp16_build(config="trust_model = true\n"), "trust_model cannot be set",
                 id="config-trust-model-true", marks=slow),
    pytest.param(build_with("--target", "jetson-orin-nano", "--data", "digits",
                            config='[prune]\nstages = "two"\n'),
                 "[prune] stages must be an integer, got 'two'", id="config-stages-text"),
    pytest.param(fp16_build(config="out = 5\n"), "out must be a path (a string), got 5",
                 id="config-out-number"),
    pytest.param(build_with("--precision", "fp16", "--method", "none",
                            config='target = ["jetson-nano"]\n'),
                 "target must be a string, got ['jetson-nano']", id="config-target-list"),
    pytest.param(fp16_build(config='measure_host = "no"\n'),
                 "measure_host must be true or false, got 'no'", id="config-measure-host-text"),
    pytest.param(fp16_build(config="prune = 3\n"), "prune must be a table",
                 id="config-prune-not-a-table", marks=slow),
    pytest.param(fp16_build(config="seed = -1\n"), "seed must be at least 0, got -1",
                 id="config-seed-negative", marks=slow),
    pytest.param(fp16_build(config="[prune]\nmax_error_increase = 2.0\n"),
                 "[prune] max_error_increase must be in [0, 1], got 2.0",
                 id="config-epsilon-range", marks=slow),
    pytest.param(fp16_build(config="stages = 2\n"), "unknown option(s) stages",
                 id="config-unknown-key"),
    pytest.param(fp16_build(config="target = \n"), "is not valid TOML", id="config-not-toml",
                 marks=slow),
    # ranges, refused when the command starts
    pytest.param(build_with("--target", "jetson-orin-nano", "--data", "digits",
                            "--max-error-increase", "1.5"),
                 "--max-error-increase must be in [0, 1], got 1.5", id="epsilon-above-1"),
    pytest.param(cmd_with_model("prune", "--data", "digits", "--max-error-increase", "-0.1"),
                 "--max-error-increase must be in [0, 1], got -0.1", id="prune-epsilon-negative",
                 marks=slow),
    pytest.param(fp16_build("--fps", "0"), "--fps must be greater than 0, got 0.0",
                 id="fps-zero"),
    pytest.param(fp16_build("--seed", "-1"), "--seed must be at least 0, got -1",
                 id="build-seed-negative"),
    pytest.param(lambda tmp: ["train", "--arch", "resnet20", "--data", "digits", "--seed", "-1",
                              "--out", out(tmp)], "--seed must be at least 0", id="train-seed",
                 marks=slow),
    pytest.param(lambda tmp: ["train", "--arch", "resnet20", "--data", "digits", "--epochs",
                              "0", "--out", out(tmp)], "--epochs must be at least 1, got 0",
                 id="train-epochs-zero"),
    pytest.param(build_with("--target", "jetson-orin-nano", "--data", "digits", "--stages",
                            "-1"), "--stages must be at least 1, got -1", id="stages-negative"),
    pytest.param(build_with("--target", "jetson-orin-nano", "--data", "digits",
                            "--finetune-epochs", "-2"), "--finetune-epochs must be at least 0",
                 id="finetune-epochs-negative", marks=slow),
    pytest.param(build_with("--target", "jetson-orin-nano", "--data", "digits", "--samples",
                            "-5"), "--samples must be at least 2, got -5",
                 id="samples-negative", marks=slow),
    pytest.param(cmd_with_model("quantize", "--precision", "int8", "--data", "digits",
                                "--calibration-samples", "-5"),
                 "--calibration-samples must be at least 1, got -5",
                 id="calibration-samples-negative"),
    pytest.param(with_onnx("engine", "--target", "jetson-xavier-nx", "--dla-core", "-1"),
                 "--dla-core must be at least 0", id="engine-dla-core-negative", marks=slow),
    pytest.param(with_onnx("profile", "--target", "host-cpu", "--batch", "0"),
                 "--batch must be at least 1, got 0", id="profile-batch-zero", marks=slow),
    # names: precision, method, target (a name from targets/, or an explicit --target-file)
    pytest.param(fp16_build("--precision", "int4"), "unknown precision 'int4'",
                 id="precision-unknown"),
    pytest.param(build_with("--target", "jetson-orin-nano", "--method", "prune-all"),
                 "unknown pruning method 'prune-all'", id="method-unknown", marks=slow),
    pytest.param(build_with("--target", "jetson-orin-nano", "--method", "none", "--precision",
                            "int8"), "--precision int8 needs data", id="int8-without-data"),
    pytest.param(build_with("--precision", "fp16", "--method", "none"), "no target given",
                 id="target-missing", marks=slow),
    pytest.param(build_with("--target", "../../../tmp/x", "--method", "none"),
                 "unknown target '../../../tmp/x'", id="target-is-a-path"),
    pytest.param(lambda tmp: fp16_build("--target-file", tmp / "none.toml")(tmp),
                 "--target NAME or --target-file PATH, not both", id="target-and-target-file",
                 marks=slow),
    pytest.param(target_file(lambda t: t.replace("cuda_cores = 128", "cuda_cores = -1")),
                 "gpu.cuda_cores", id="target-file-breaks-schema"),
    pytest.param(target_file(lambda t: t + "\n[[["), "is not valid TOML",
                 id="target-file-not-toml", marks=slow),
    # the flag an error suggests is one the command has
    pytest.param(with_onnx("engine", "--target", "jetson-nano", "--precision", "int8"),
                 "or pass --allow-emulated", id="engine-int8-on-nano"),
    pytest.param(cmd_with_model("quantize", "--precision", "int8", "--data", "digits",
                                "--target", "jetson-nano"), "or pass --allow-emulated",
                 id="quantize-int8-on-nano", marks=slow),
    # the build directory
    pytest.param(out_is_a_file, "is an existing file", id="out-is-a-file"),
    pytest.param(out_parent_is_a_file, "is a file, not a directory", id="out-parent-is-a-file"),
    pytest.param(damaged_state, "build-state.json is damaged", id="resume-damaged-state"),
    pytest.param(fp16_build(model=False), "does not exist", id="build-model-missing", marks=slow),
]
BAD_INPUTS += CORE_INPUTS


# ---------------------------------------------------------------- archives, folders, options
# (.pt2 archives, calib:DIR, --mean/--std, target lists, --reuse-pruning, --objective latency)


def calib(make_dir):
    """int8 quantize of a digits checkpoint, calibrated on calib:<the folder make_dir makes>."""
    def build(tmp):
        return ["quantize", save_model(tmp), "--precision", "int8", "--data", "digits",
                "--calibration-data", f"calib:{make_dir(tmp)}", "--out", out(tmp)]
    return build


def _empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def with_mean_std(mean: str, std: str, checkpoint_norm=None):
    """``evaluate`` of a digits checkpoint (normalization ``checkpoint_norm``; None: none)."""
    def build(tmp):
        return ["evaluate", save_model(tmp, normalization=checkpoint_norm), "--data", "digits",
                "--mean", mean, "--std", std]
    return build


NEW_INPUTS = [
    pytest.param(raw_model(b"hello, I am text\n", name="model.pt2"), "not a PyTorch model file",
                 id="pt2-text"),
    pytest.param(lambda tmp: model_args("export", save_model(tmp, name="model.pt2"), tmp),
                 "not a torch.export archive", id="pt2-is-a-torch-save-zip"),
    pytest.param(calib(lambda tmp: tmp / "missing"), "does not exist", id="calib-dir-missing"),
    pytest.param(calib(_empty_dir), "has no images", id="calib-dir-empty", marks=slow),
    pytest.param(lambda tmp: ["quantize", save_model(tmp), "--precision", "int8", "--data",
                              "digits", "--calibration-data", tmp, "--out", out(tmp)],
                 "give calib:DIR", id="calib-spec-without-prefix", marks=slow),
    pytest.param(with_mean_std("0.9", "0.9", {"mean": [0.3], "std": [0.4]}),
                 "leave --mean/--std out", id="mean-std-differs-from-checkpoint"),
    pytest.param(with_mean_std("a", "0.2"), "numbers separated by commas",
                 id="mean-not-a-number", marks=slow),
    pytest.param(with_mean_std("0.5,0.5", "0.2"), "--mean has 2 values but --std has 1",
                 id="mean-std-counts-differ", marks=slow),
    pytest.param(build_with("--target", "host-cpu,jetson-nope", "--data", "digits"),
                 "unknown target 'jetson-nope'", id="target-list-unknown"),
    pytest.param(build_with("--target", "host-cpu,host-cpu", "--data", "digits"),
                 "names host-cpu twice", id="target-list-repeated", marks=slow),
    pytest.param(lambda tmp: build_with("--target", "host-cpu", "--data", "digits",
                                        "--reuse-pruning", tmp)(tmp),
                 "no build-state.json there", id="reuse-pruning-not-a-build", marks=slow),
    pytest.param(cmd_with_model("prune", "--data", "digits", "--objective", "latency"),
                 "--objective latency needs", id="objective-latency-without-target"),
    pytest.param(cmd_with_model("prune", "--data", "digits", "--stable-clusters", "-2"),
                 "stable clusters must be", id="stable-clusters-negative", marks=slow),
    pytest.param(lambda tmp: [*train_on("digits", tmp), "--warmup-epochs", "-1"],
                 "--warmup-epochs must be at least 0, got -1", id="train-warmup-negative"),
]
BAD_INPUTS += NEW_INPUTS


# ---------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def launched(request, tmp_path_factory):
    """Every selected row, started at once on a pool as wide as the CPU count: the runs are
    independent processes, and each is mostly torch's import."""
    rows = {item.callspec.id: item.callspec.params["build"] for item in request.session.items
            if item.path == Path(__file__) and item.originalname == "test_bad_input"}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        yield {row_id: pool.submit(run_row, build, tmp_path_factory.mktemp("bad"))
               for row_id, build in rows.items()}


@pytest.mark.parametrize("build,match", BAD_INPUTS)
def test_bad_input(build, match, launched, request):
    result, before, after = launched[request.node.callspec.id].result()
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert match in lines[0]
    assert after == before, "the failed command changed its --out path"
    assert_flags_exist(lines[0], result.args)


def assert_flags_exist(message: str, argv: list[str]) -> None:
    """Every --flag an error suggests is one the failing command has (backticked commands
    name their own flags)."""
    import re

    import edgeprune.cli  # noqa: F401  (registers the commands)
    from edgeprune.cli.app import app
    from typer.testing import CliRunner

    command = argv[argv.index("edgeprune") + 1]
    flags = set(re.findall(r"--[a-z][a-z-]*", re.sub(r"`[^`]*`", "", message)))
    if flags:
        helptext = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        missing = sorted(f for f in flags if f not in helptext)
        assert not missing, f"{command} has no {missing}, but its error names them"
