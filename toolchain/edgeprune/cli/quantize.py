"""``edgeprune quantize``: fp16, calibrated int8 or binary weights for one model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from edgeprune.cli.app import command, console, make_progress


@command("quantize")
def quantize_cmd(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to quantize (pruned or not)."),
    precision: str = typer.Option(..., "--precision", help="fp16, int8, binary, fp32 or auto "
                                  "(the fastest precision the target runs)."),
    data: str = typer.Option(None, "--data", help="Data spec (cifar10:DIR, npz:FILE, "
                             "imagefolder:DIR, digits): int8 calibrates on its train split, "
                             "binary fine-tunes on it, accuracy uses its test split."),
    out: Path = typer.Option(..., "--out", help="Output folder (quantize.json is merged)."),
    target: str = typer.Option("host-cpu", "--target", help="Target name (`edgeprune "
                               "targets`): decides the allowed precisions and the int8 flavour."),
    allow_emulated: bool = typer.Option(False, "--allow-emulated", help="Allow a precision the "
                                        "target does not run fast."),
    calibration_samples: int = typer.Option(None, "--calibration-samples", help="Training "
                                            "images to calibrate on (default: the recipe's)."),
    calibration_method: str = typer.Option(None, "--calibration-method", help="minmax, entropy "
                                           "or percentile (default: the recipe's)."),
    percentile: float = typer.Option(None, "--percentile", help="Percentile for "
                                     "--calibration-method percentile, e.g. 99.99."),
    recipe: str = typer.Option(None, "--recipe", help="Calibration recipe name or .toml path "
                               "(default: calibration/<data kind>.toml)."),
    int8_flavour: str = typer.Option("auto", "--int8-flavour", help="auto (from the target's "
                                     "runtime), tensorrt (s8 symmetric QDQ) or ort-cpu (u8s8)."),
    binary_epochs: int = typer.Option(5, "--binary-epochs", min=0, help="STE fine-tune epochs."),
    binary_lr: float = typer.Option(0.05, "--binary-lr", help="STE fine-tune learning rate."),
    binary_activations: bool = typer.Option(False, "--binary-activations", help="Also binarize "
                                            "the inputs of the binarized layers (sign)."),
    binarize_first: bool = typer.Option(False, "--binarize-first", help="Binarize the first "
                                        "conv too (usually kept float)."),
    binarize_classifier: bool = typer.Option(False, "--binarize-classifier", help="Binarize the "
                                             "classifier too (usually kept float)."),
    seed: int = typer.Option(0, "--seed", help="Seed (calibration subset, fine-tuning)."),
    trust_model: bool = typer.Option(False, "--trust-model", help="Allow a pickled nn.Module "
                                     "(unpickling runs code from the file)."),
) -> None:
    """Quantize a model and report its accuracy next to fp32's in OUT/quantize.json."""
    from edgeprune.atomic import write_with
    from edgeprune.checkpoint import data_for_model, load_model
    from edgeprune.errors import EdgepruneError
    from edgeprune.export import export_onnx
    from edgeprune.quantize import NEEDS_DATA, QuantizeConfig, quantize_model
    from edgeprune.quantize.calibration import load_recipe
    from edgeprune.quantize.int8 import flavour_for
    from edgeprune.targets import load_target, resolve_precision

    tgt = load_target(target)
    resolved = resolve_precision(tgt, precision, allow_emulated=allow_emulated)
    config = QuantizeConfig(
        calibration_samples=calibration_samples, calibration_method=calibration_method,
        percentile=percentile, recipe=recipe, int8_flavour=int8_flavour,
        binary_epochs=binary_epochs, binary_lr=binary_lr, binary_activations=binary_activations,
        binary_skip_first=not binarize_first, binary_skip_classifier=not binarize_classifier,
        seed=seed)
    if resolved in NEEDS_DATA and not data:
        raise EdgepruneError(f"--precision {resolved} needs --data SPEC (calibration or "
                             "fine-tuning data)")
    loaded = load_model(model, trust_model=trust_model)
    dataset = None
    if data:
        from edgeprune.data import load_dataset

        dataset = data_for_model(loaded, load_dataset(data))
    if resolved == "int8":  # bad calibration options fail before any work
        flavour_for(tgt, int8_flavour)
        load_recipe(recipe or dataset.kind).with_overrides(
            samples=calibration_samples, method=calibration_method, percentile=percentile)
    if loaded.info.input_shape is None:
        raise EdgepruneError(f"{model} does not record its input shape; pass --data")
    with tempfile.TemporaryDirectory(prefix="edgeprune-quantize-") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(loaded.model, tuple(loaded.info.input_shape), fp32)
        with make_progress() as progress:
            result = quantize_model(loaded, fp32, dataset, resolved, tgt, out, config, progress)
        write_with(Path(out) / "model.onnx", lambda p: p.write_bytes(fp32.read_bytes()))
    s = result.summary
    acc = (f"accuracy {result.accuracy:.2%} (fp32 {result.fp32_accuracy:.2%})"
           if result.accuracy is not None else "accuracy not measured (no --data)")
    console.print(f"{resolved}{f' ({result.flavour})' if result.flavour else ''}: wrote "
                  f"{result.onnx_path} ({s['size_bytes']:,} bytes; fp32 {s['fp32_size_bytes']:,}); "
                  f"{acc}")
    if resolved == "binary":
        p = s["packed"]
        console.print(f"binary: accuracy before fine-tune {s['accuracy_before_finetune']:.2%}, "
                      f"after {s['accuracy_after_finetune']:.2%}; packed weights {p['bytes']:,} "
                      f"bytes = 1/{1 / p['ratio']:.1f} of their fp32 bytes")
    if result.calibration_cache:
        console.print(f"TensorRT calibration cache: {result.calibration_cache}")
