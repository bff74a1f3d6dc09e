"""Quantization: fp16, calibrated int8 (TensorRT or ONNX Runtime CPU flavour), binary weights.

``quantize_model`` takes the (pruned) model, its fp32 ONNX export and the data, and writes the
quantized ONNX model into the output folder, with its accuracy next to fp32's in
``quantize.json`` (one entry per precision, merged). Each precision of
:mod:`edgeprune.precision` has a maker function in the ``MAKERS`` registry. Every written model
carries ONNX metadata ``edgeprune.precision``; binary
models also ``edgeprune.binary_weights`` (JSON list of the binarized initializers) and
``edgeprune.binary_activations``, which the profiler reads to cost binary layers.

Nothing is half-written: files are made in a hidden staging folder inside ``out_dir`` and moved
in when all of them are done (nothing is ever written outside ``out_dir``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.atomic import write_json
from edgeprune.errors import EdgepruneError

QUANTIZE_JSON = "quantize.json"


@dataclass
class QuantizeConfig:
    """Options of the quantization stage (None = the calibration recipe's value)."""

    calibration_samples: int | None = None
    calibration_method: str | None = None  # minmax | entropy | percentile
    percentile: float | None = None
    recipe: str | None = None  # recipe name or .toml path; None = the data spec's kind
    calibration_data: str | None = None  # calib:DIR (unlabeled images); None = --data's train
    int8_flavour: str = "auto"  # auto (from the target's runtime) | tensorrt | ort-cpu
    cache_algorithm: str = "EntropyCalibration2"  # header of the TensorRT calibration cache
    fp16_keep_io_types: bool = True
    binary_epochs: int = 5
    binary_lr: float = 0.05
    binary_batch_size: int = 128
    binary_activations: bool = False
    binary_skip_first: bool = True
    binary_skip_classifier: bool = True
    shared_bits: int = 5  # Deep Compression: 2^bits shared values per layer
    shared_epochs: int = 3  # centroid fine-tuning epochs
    shared_lr: float = 0.001  # a centroid's gradient sums thousands of weights' (0.01: -3 pts)
    eval_split: str = "test"
    seed: int = 0
    device: str = "cpu"


@dataclass
class QuantizeResult:
    onnx_path: Path
    precision: str
    flavour: str | None
    accuracy: float | None
    fp32_accuracy: float | None
    calibration_cache: Path | None = None
    summary: dict = field(default_factory=dict)


@dataclass
class Job:
    """What a precision's function gets: inputs, a staging folder, progress."""

    loaded: object  # LoadedModel
    fp32_onnx: Path
    data: object  # Dataset normalised for the model, or None
    target: object  # Target
    stage: Path  # staging folder: write files here under their final names
    config: QuantizeConfig
    progress: object = None  # rich Progress or None

    def task(self, description: str, total: int) -> Callable[[int], None]:
        """A progress bar; returns advance(n)."""
        if self.progress is None:
            return lambda n=1: None
        task = self.progress.add_task(description, total=total, info="")
        return lambda n=1: self.progress.advance(task, n)

    def accuracy(self, path: Path) -> float | None:
        from edgeprune.export import onnx_accuracy

        if self.data is None:
            return None
        return onnx_accuracy(path, self.data, self.config.eval_split)


# ---------------------------------------------------------------- precisions


def _fp32(job: Job) -> dict:
    path = job.stage / "model.fp32.onnx"
    shutil.copyfile(job.fp32_onnx, path)
    set_metadata(path, {"edgeprune.precision": "fp32"})
    return {"file": path.name, "flavour": None, "runtime": "any", "accuracy": job.accuracy(path)}


def _fp16(job: Job) -> dict:
    import onnx

    from edgeprune.quantize.fp16 import convert_fp16, parity

    path = job.stage / "model.fp16.onnx"
    model = convert_fp16(job.fp32_onnx, keep_io_types=job.config.fp16_keep_io_types)
    _set_props(model, {"edgeprune.precision": "fp16"})
    onnx.save(model, str(path))
    check = parity(job.fp32_onnx, path, _parity_inputs(job))
    return {"file": path.name, "flavour": "float16 ONNX (io float32)"
            if job.config.fp16_keep_io_types else "float16 ONNX",
            "runtime": "onnxruntime-cpu (emulated; no fast fp16 on this CPU)",
            "tensorrt": "builder flag --fp16 on the fp32 ONNX (model.onnx)",
            "parity": {"max_abs_diff": check.max_abs_diff, "output_scale": check.output_scale,
                       "tolerance": f"{check.tolerance:g} x max(1, max |fp32 logits|)",
                       "top1_agreement": check.argmax_agreement},
            "accuracy": job.accuracy(path)}


def _int8(job: Job) -> dict:
    from edgeprune.quantize.calibration import write_trt_cache
    from edgeprune.quantize.int8 import flavour_for, quantize_int8

    flavour = flavour_for(job.target, job.config.int8_flavour)
    recipe = _recipe(job)
    source = _calibration_source(job, recipe)
    advance = job.task(f"calibrate int8 ({recipe.method}, {len(source)} "
                       f"{'unlabeled' if source.images is not None else 'train'} images)",
                       source.num_batches)
    path = job.stage / f"model.int8.{flavour.name}.onnx"
    out = quantize_int8(job.fp32_onnx, path, source, recipe, flavour, on_batch=advance,
                        workdir=job.stage)
    set_metadata(path, {"edgeprune.precision": "int8", "edgeprune.int8_flavour": flavour.name})
    trt_version = job.target.section("software").get("tensorrt")
    write_trt_cache(job.stage / "calibration.cache", out.amax, tensorrt_version=trt_version,
                    algorithm=job.config.cache_algorithm)
    return {"file": path.name, "flavour": flavour.name, "runtime": flavour.runtime,
            "format": flavour.description,
            "tensorrt": ("explicit int8 from this QDQ model" if flavour.name == "tensorrt" else
                         "not for TensorRT: use the tensorrt flavour, or implicit int8 from the "
                         "fp32 ONNX with calibration.cache"),
            "calibration": {**recipe.to_dict(), "source": source.description,
                            "samples": len(source),
                            "tensors": len(out.amax)},
            "calibration_cache": {"file": "calibration.cache", "algorithm_header":
                                  job.config.cache_algorithm,
                                  "tensorrt_version": trt_version or "8.2.1 (default)",
                                  "for": "implicit int8 calibration from the fp32 ONNX"},
            "accuracy": job.accuracy(path)}


def _calibration_source(job: Job, recipe):
    """The train split of the data, or the images of ``calibration_data`` (calib:DIR), resized
    to the model's input and normalised as the model takes them."""
    from edgeprune.quantize.calibration import CalibrationImages, CalibrationSource

    batch = _model_batch(job.fp32_onnx)
    spec = job.config.calibration_data
    if not spec:
        return CalibrationSource(job.data, recipe, batch_size=batch, seed=job.config.seed)
    info = job.loaded.info
    norm = job.data
    if norm is None:
        from edgeprune.data import Normalization

        if info.mean is None or info.std is None:
            raise EdgepruneError(f"calibration on {spec} needs the model's normalization: the "
                                 "model file stores none, so pass --mean and --std (or --data "
                                 "to take the data set's)")
        norm = Normalization(info.mean, info.std, info.normalization_source)
    images = CalibrationImages.load(spec, info.input_shape, recipe.samples, job.config.seed)
    return CalibrationSource(norm, recipe, batch_size=batch, seed=job.config.seed, images=images)


def _binary(job: Job) -> dict:
    import copy

    import onnx
    from onnx import numpy_helper

    from edgeprune.export import export_onnx
    from edgeprune.quantize import binary as B
    from edgeprune.train import TrainConfig, evaluate, train

    cfg = job.config
    model = copy.deepcopy(job.loaded.model).cpu()
    names = B.binarizable_layers(model, skip_first=cfg.binary_skip_first,
                                 skip_classifier=cfg.binary_skip_classifier)
    if not names:
        from edgeprune.pt2 import no_layers_hint

        raise EdgepruneError("the model has no Conv/Linear layer to binarize (besides the first "
                             "conv and the classifier, which stay float)"
                             f"{no_layers_hint(model)}; use fp16 or int8")
    B.binarize_model(model, names, activations=cfg.binary_activations)
    before = evaluate(model, job.data, cfg.eval_split).accuracy
    losses = train(model, job.data, TrainConfig(
        epochs=cfg.binary_epochs, batch_size=cfg.binary_batch_size, lr=cfg.binary_lr,
        seed=cfg.seed, device=cfg.device), _epoch_progress(job, "binary fine-tune (STE)"))
    model.cpu()
    after = evaluate(model, job.data, cfg.eval_split).accuracy
    B.freeze_binary(model, names)
    path = job.stage / "model.binary.onnx"
    # sign() of activations may flip for values within float rounding of 0 between PyTorch and
    # ORT (BatchNorm is folded in ONNX): such flips move the logits, so allow more there.
    export_onnx(model, tuple(job.loaded.info.input_shape), path,
                tolerance=5e-2 if cfg.binary_activations else 1e-4)
    graph = onnx.load(str(path))
    inits = B.binary_initializers(graph, expected=len(names))
    tensors = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer
               if i.name in inits}
    packed_bytes = B.write_packed(job.stage / "model.binary.packed", tensors)
    set_metadata(path, {"edgeprune.precision": "binary",
                        "edgeprune.binary_weights": json.dumps(inits),
                        "edgeprune.binary_activations": str(cfg.binary_activations).lower()})
    fp32_bytes = sum(t.nbytes for t in tensors.values())
    return {"file": path.name, "flavour": "binary weights" + (" and activations"
                                                              if cfg.binary_activations else ""),
            "runtime": "any (float kernels on the binarized values)",
            "tensorrt": "fp32/fp16 engine from this ONNX: TensorRT has no 1-bit kernels",
            "packed": {"file": "model.binary.packed", "bytes": packed_bytes,
                       "binarized_fp32_bytes": fp32_bytes,
                       "ratio": packed_bytes / max(1, fp32_bytes),
                       "format": "signs 1 bit/weight (numpy.packbits) + float32 scale per "
                                 "output channel"},
            "layers": names, "binary_initializers": inits,
            "binary_activations": cfg.binary_activations,
            "finetune": {"epochs": cfg.binary_epochs, "lr": cfg.binary_lr, "losses": losses,
                         "estimator": "straight-through, gradient where |W| <= 1"},
            "accuracy_before_finetune": before, "accuracy_after_finetune": after,
            "accuracy": job.accuracy(path)}


def _shared(job: Job) -> dict:
    from edgeprune.quantize.deep_compression import make_shared

    return make_shared(job)


MAKERS: dict[str, Callable[[Job], dict]] = {
    "fp32": _fp32, "fp16": _fp16, "int8": _int8, "binary": _binary, "shared": _shared,
}


# ---------------------------------------------------------------- the stage


def quantize_model(loaded, fp32_onnx: Path, data, precision: str, target, out_dir: Path,
                   config: QuantizeConfig, progress=None) -> QuantizeResult:
    """Quantize ``loaded`` to ``precision`` (already resolved against ``target``) into
    ``out_dir``; merge its entry into ``out_dir/quantize.json``."""
    from edgeprune.checkpoint import data_for_model
    from edgeprune.precision import get_precision
    from edgeprune.quantize.calibration import calibrates_without_data

    precision = get_precision(precision).name
    if data is None and get_precision(precision).needs_data and \
            not calibrates_without_data(precision, config.calibration_data):
        raise EdgepruneError(f"{precision} needs data (calibration or fine-tuning): pass --data "
                             "SPEC")
    if data is not None:
        data = data_for_model(loaded, data)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".quantize-", dir=out_dir))
    try:
        job = Job(loaded, Path(fp32_onnx), data, target, stage, config, progress)
        entry = MAKERS[precision](job)
        fp32_acc = job.accuracy(Path(fp32_onnx)) if precision != "fp32" else entry["accuracy"]
        entry = _finish_entry(entry, job, precision, fp32_acc)
        _move_into(stage, out_dir)
    except BaseException:
        if created:  # a failed first run leaves no folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _merge_json(out_dir / QUANTIZE_JSON, precision, entry)
    cache = out_dir / "calibration.cache" if precision == "int8" else None
    return QuantizeResult(out_dir / entry["file"], precision, entry.get("flavour"),
                          entry["accuracy"], fp32_acc, cache, entry)


def _finish_entry(entry: dict, job: Job, precision: str, fp32_acc: float | None) -> dict:
    return {"precision": precision, **entry, "target": job.target.name,
            "size_bytes": (job.stage / entry["file"]).stat().st_size,
            "fp32_size_bytes": job.fp32_onnx.stat().st_size,
            "fp32_accuracy": fp32_acc, "eval_split": job.config.eval_split,
            "accuracy_delta": (entry["accuracy"] - fp32_acc
                               if entry["accuracy"] is not None and fp32_acc is not None
                               else None)}


def _move_into(stage: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in stage.iterdir():
        os.replace(f, out_dir / f.name)


def _merge_json(path: Path, precision: str, entry: dict) -> None:
    doc = {}
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            doc = {}
    doc[precision] = entry
    write_json(path, doc)


# ---------------------------------------------------------------- helpers


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Set ONNX ``metadata_props`` on the file at ``path`` (rewritten in place)."""
    import onnx

    model = onnx.load(str(path))
    _set_props(model, props)
    onnx.save(model, str(path))


def _set_props(model, props: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)


def read_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _recipe(job: Job):
    from edgeprune.quantize.calibration import load_recipe

    c = job.config
    kind = job.data.kind if job.data is not None else "imagefolder"  # calib:DIR, no --data
    return load_recipe(c.recipe or kind).with_overrides(
        samples=c.calibration_samples, method=c.calibration_method, percentile=c.percentile)


def _model_batch(path: Path) -> int:
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return dim[0].dim_value if dim and dim[0].dim_value > 0 else 32


def _parity_inputs(job: Job):
    import numpy as np

    if job.data is not None:
        split = job.data.sample("train", 64, seed=job.config.seed)
        return job.data.normalize(split.x)
    shape = tuple(job.loaded.info.input_shape)
    return np.random.default_rng(job.config.seed).standard_normal((16, *shape)).astype("float32")


def _epoch_progress(job: Job, label: str):
    if job.progress is None:
        return None
    tasks: dict[int, int] = {}

    def update(epoch: int, epochs: int, batch: int, batches: int, loss: float) -> None:
        if epoch not in tasks:
            tasks[epoch] = job.progress.add_task(f"{label} epoch {epoch + 1}/{epochs}",
                                                 total=batches, info="")
        job.progress.update(tasks[epoch], completed=batch, info=f"loss {loss:.3f}")

    return update


__all__ = ["MAKERS", "QuantizeConfig", "QuantizeResult", "quantize_model", "read_metadata",
           "set_metadata"]
