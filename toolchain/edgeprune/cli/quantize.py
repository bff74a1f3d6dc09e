"""``edgeprune quantize``: fp16, calibrated int8 or binary weights for one model.

It runs the build pipeline's load, export and quantize stages on the model as it is (no
pruning), so the precision is decided exactly as ``edgeprune build`` decides it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edgeprune.cli import options as o
from edgeprune.cli.app import command, console, make_progress


@command("quantize")
def quantize_cmd(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to quantize (pruned or not)."),
    precision: str = typer.Option(..., "--precision", help="fp16, int8, binary, shared, fp32 or "
                                  "auto (the fastest by the target's latency estimate)."),
    data: str = typer.Option(None, "--data", help="Data spec (cifar10:DIR, npz:FILE, "
                             "imagefolder:DIR, digits): int8 calibrates on its train split "
                             "(or on --calibration-data calib:DIR), "
                             "binary fine-tunes on it, accuracy uses its test split."),
    out: Path = typer.Option(..., "--out", help="Output folder (quantize.json is merged)."),
    target: o.Target = None,
    target_file: o.TargetFile = None,
    allow_emulated: o.AllowEmulated = None,
    calibration_samples: o.CalibrationSamples = None,
    calibration_method: o.CalibrationMethod = None,
    calibration_data: o.CalibrationData = None,
    mean: o.Mean = None,
    std: o.Std = None,
    percentile: float = typer.Option(None, "--percentile", help="Percentile for "
                                     "--calibration-method percentile, e.g. 99.99."),
    recipe: str = typer.Option(None, "--recipe", help="Calibration recipe name or .toml path "
                               "(default: calibration/<data kind>.toml)."),
    int8_flavour: str = typer.Option(None, "--int8-flavour", help="auto (from the target's "
                                     "runtime), tensorrt (s8 symmetric QDQ) or ort-cpu (u8s8)."),
    binary_epochs: o.BinaryEpochs = None,
    shared_bits: o.SharedBits = None,
    shared_epochs: o.SharedEpochs = None,
    binary_lr: float = typer.Option(None, "--binary-lr", help="STE fine-tune learning rate."),
    binary_activations: bool = typer.Option(None, "--binary-activations", help="Also binarize "
                                            "the inputs of the binarized layers (sign)."),
    binarize_first: bool = typer.Option(False, "--binarize-first", help="Binarize the first "
                                        "conv too (usually kept float)."),
    binarize_classifier: bool = typer.Option(False, "--binarize-classifier", help="Binarize the "
                                             "classifier too (usually kept float)."),
    seed: o.Seed = None,
    trust_model: o.TrustModel = False,
    arch: o.Arch = None,
    num_classes: o.NumClasses = None,
    input_size: o.InputSize = None,
) -> None:
    """Quantize a model and report its accuracy next to fp32's in OUT/quantize.json."""
    from edgeprune.api import quantize_model

    quantize = o.given(calibration_samples=calibration_samples,
                       calibration_method=calibration_method, percentile=percentile,
                       calibration_data=calibration_data, recipe=recipe,
                       int8_flavour=int8_flavour, binary_epochs=binary_epochs,
                       binary_lr=binary_lr, binary_activations=binary_activations,
                       shared_bits=shared_bits, shared_epochs=shared_epochs)
    quantize.update(binary_skip_first=not binarize_first,
                    binary_skip_classifier=not binarize_classifier)
    with make_progress(transient=True) as progress:
        result = quantize_model(model, precision, out,
                                target=target if target or target_file else "host-cpu",
                                target_file=target_file, data=data, config=quantize,
                                trust_model=trust_model, progress=progress, arch=arch,
                                num_classes=num_classes, input_size=input_size,
                                mean=mean, std=std,
                                **o.given(seed=seed, allow_emulated=allow_emulated))
    _print(result.state, out)


def _print(state, out: Path) -> None:
    q, precision = state.results["quantize"], state.results["load"].precision
    console.print(f"precision {precision}: {state.results['load'].resolution.reason}",
                  highlight=False)
    if q.summary is None:  # fp32: the exported model is the result
        console.print(f"fp32: wrote {Path(out) / q.onnx}")
        return
    s = q.summary
    acc = (f"accuracy {q.accuracy:.2%} (fp32 {q.fp32_accuracy:.2%})"
           if q.accuracy is not None else "accuracy not measured (no --data)")
    console.print(f"{precision}{f' ({q.flavour})' if q.flavour else ''}: wrote "
                  f"{Path(out) / q.onnx} ({s['size_bytes']:,} bytes; fp32 "
                  f"{s['fp32_size_bytes']:,}); {acc}")
    if precision == "binary":
        p = s["packed"]
        console.print(f"binary: accuracy before fine-tune {s['accuracy_before_finetune']:.2%}, "
                      f"after {s['accuracy_after_finetune']:.2%}; packed weights {p['bytes']:,} "
                      f"bytes = 1/{1 / p['ratio']:.1f} of their fp32 bytes")
    if precision == "shared":
        b = s["storage_bytes"]
        console.print(f"shared: accuracy before fine-tune {s['accuracy_before_finetune']:.2%}, "
                      f"after {s['accuracy_after_finetune']:.2%}; stored weights fp32 "
                      f"{b['fp32']:,} / fp16 {b['fp16']:,} / int8 {b['int8']:,} / shared+Huffman "
                      f"{b['shared_huffman']:,} bytes ({s['packed']['file']}); "
                      f"{s['deployment_note']}")
    if q.calibration_cache:
        console.print(f"TensorRT calibration cache: {Path(out) / q.calibration_cache}")
