"""Options that several commands share, declared once (type, flag, help).

Defaults are not repeated here: an option left out is None and the library's config dataclass
(BuildConfig, PruneConfig, QuantizeConfig, TrainConfig) supplies its default. Range checks run
in the library (edgeprune.config) so that a bad value is the same one-line error everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeprune.errors import EdgepruneError

DATA_HELP = "Data spec: cifar10:DIR, npz:FILE, imagefolder:DIR or digits."
TRUST_HELP = ("Allow loading a whole pickled nn.Module. Unpickling runs code from the file: use "
              "it only for files you trust. Only this flag turns it on (never a config file).")

Target = Annotated[str | None, typer.Option(
    "--target", help="Device target: a name from targets/ (see `edgeprune targets`).")]
TargetFile = Annotated[Path | None, typer.Option(
    "--target-file", help="Your own target TOML instead of --target, checked against the "
                          "target schema (laid out as targets/jetson-nano.toml).")]
Data = Annotated[str | None, typer.Option("--data", help=DATA_HELP)]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed (≥ 0) [default: 0].")]
TrustModel = Annotated[bool, typer.Option("--trust-model", help=TRUST_HELP)]
AllowEmulated = Annotated[bool | None, typer.Option(
    "--allow-emulated/--no-allow-emulated",
    help="Allow a precision the target has no fast path for (it runs emulated).")]
Precision = Annotated[str | None, typer.Option(
    "--precision", help="auto (the fastest by the target's latency estimate), fp32, fp16, int8, "
                        "binary or shared (Deep Compression: k-means shared weights + "
                        "Huffman; shrinks the stored file, not latency).")]
OutDir = Annotated[Path | None, typer.Option("--out", help="Directory to write into.")]
MeasureHost = Annotated[bool | None, typer.Option(
    "--measure-host/--no-measure-host", help="Time every variant with ONNX Runtime here "
                                             "[default: on].")]
Fps = Annotated[float | None, typer.Option("--fps", help="Frame rate for power in watts "
                                                         "[default: 30].")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out "
                                      "from its last finished stage (same options and inputs).")]
CalibrationSamples = Annotated[int | None, typer.Option(
    "--calibration-samples", help="Training images to calibrate int8 on (default: the "
                                  "recipe's).")]
CalibrationMethod = Annotated[str | None, typer.Option(
    "--calibration-method", help="minmax, entropy or percentile (default: the recipe's).")]
CalibrationData = Annotated[str | None, typer.Option(
    "--calibration-data", help="int8: calibrate on calib:DIR, a folder of unlabeled images "
                               "(any format Pillow reads, flat or nested), resized to the "
                               "model's input, instead of --data's train split.")]
Mean = Annotated[str | None, typer.Option(
    "--mean", help="Input mean per channel, e.g. 0.485,0.456,0.406, for a model file that "
                   "stores no normalization (with --std; values that differ from the file's "
                   "are refused).")]
Std = Annotated[str | None, typer.Option(
    "--std", help="Input std per channel, e.g. 0.229,0.224,0.225 (with --mean).")]
BinaryEpochs = Annotated[int | None, typer.Option(
    "--binary-epochs", help="STE fine-tuning epochs for binary weights [default: 5].")]
SharedBits = Annotated[int | None, typer.Option(
    "--shared-bits", help="shared precision: 2^b shared weight values per layer [default: 5].")]
SharedEpochs = Annotated[int | None, typer.Option(
    "--shared-epochs", help="shared precision: centroid fine-tuning epochs [default: 3].")]
DlaCore = Annotated[int | None, typer.Option(
    "--dla-core", help="Run on this DLA core, with GPU fallback (Xavier, Orin NX, AGX Orin).")]

# MSPIC options that both `prune` and `build` take (build passes them to its [prune] stage).
Stages = Annotated[int | None, typer.Option(
    "--stages", help="MSPIC stages (each: score, remove, fine-tune) [default: 3].")]
Resolutions = Annotated[str | None, typer.Option(
    "--resolutions", help="With --clustering bins: bin resolutions r, one policy each, e.g. "
                          "0.05,0.1,0.2; 'a,b;c,d' gives one list per stage.")]
Objective = Annotated[str | None, typer.Option(
    "--objective", help="Among the policies within ε, take the one that removes the most: "
                        "units, params, macs, or latency (the target's estimate) "
                        "[default: macs].")]
StableClusters = Annotated[int | None, typer.Option(
    "--stable-clusters", help="Bootstrap the MI sample N times and let only policies that "
                              "remove the same units in ≥ --stable-fraction of the draws "
                              "count [default: 0 = off].")]
StableFraction = Annotated[float | None, typer.Option(
    "--stable-fraction", help="With --stable-clusters: the fraction of draws a policy must "
                              "recur in [default: 0.5].")]
MaxErrorIncrease = Annotated[str | None, typer.Option(
    "--max-error-increase", help="ε in [0, 1]: largest allowed increase of the validation error "
                                 "(gates only); one value or one per stage (a,b,...).")]
FinetuneEpochs = Annotated[int | None, typer.Option(
    "--finetune-epochs", help="Fine-tuning epochs per pruning stage.")]
Samples = Annotated[int | None, typer.Option(
    "--samples", help="Training images for the MI estimate.")]
Sigma2 = Annotated[float | None, typer.Option(
    "--sigma2", help="Kernel variance σ² of the MI estimator (default: 1.0 × the median squared "
                     "distance with --scaling median).")]
TargetReduction = Annotated[float | None, typer.Option(
    "--target-reduction", help="Stop pruning once this fraction of the target metric "
                               "(parameters by default) is removed.")]


def parse_floats(text: str, what: str) -> list[float] | list[list[float]]:
    """"0.05,0.1" → one list for all stages; "0.05,0.1;0.1,0.2" → one list per stage."""
    try:
        per_stage = [[float(v) for v in part.split(",") if v.strip()]
                     for part in text.split(";") if part.strip()]
    except ValueError:
        raise EdgepruneError(f"{what} must be numbers separated by commas (stages by ';'), "
                             f"got {text!r}") from None
    if not per_stage or not all(per_stage):
        raise EdgepruneError(f"{what} is empty; give e.g. 0.05,0.1,0.2")
    return per_stage[0] if len(per_stage) == 1 else per_stage


def epsilon(text: str | None, flag: str = "--max-error-increase"):
    """ε as one number or one per stage ("a,b,c"), each in [0, 1]."""
    from edgeprune.config import check_range

    if text is None:
        return None
    eps = parse_floats(text, flag)
    if isinstance(eps[0], list):
        raise EdgepruneError(f"{flag} takes one value or one per stage: a,b,c")
    check_range("max_error_increase", eps, flag)
    return eps[0] if len(eps) == 1 else eps


def given(**values) -> dict:
    """The options the user gave (None = left to the config's default), range-checked."""
    from edgeprune.config import check_range

    out = {k: v for k, v in values.items() if v is not None}
    for k, v in out.items():
        check_range(k, v)
    return out


# A plain state_dict names its architecture on the command line (edgeprune.checkpoint.ArchSpec).
Arch = Annotated[str | None, typer.Option(
    "--arch", help="Architecture of a plain state_dict file: a zoo name or tv:NAME for a "
                   "torchvision builder (see `edgeprune models`).")]
NumClasses = Annotated[int | None, typer.Option(
    "--num-classes", help="Classes of the --arch model [default: from the weights].")]
InputSize = Annotated[str | None, typer.Option(
    "--input-size", help="Input of the --arch model: a side (224 = 3×224×224) or C,H,W "
                         "[default: the data's].")]
