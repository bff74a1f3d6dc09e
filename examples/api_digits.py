"""edgeprune from Python, on the built-in ``digits`` data (sklearn's 8×8 digits; no download).

    PYTHONPATH=toolchain python examples/api_digits.py --out /tmp/api-demo

Trains a small ResNet-20, prunes it with MSPIC, exports and profiles it for a Jetson Nano, then
runs the whole build pipeline for the same target. ``--quick`` uses the tiny settings the test
runs (seconds, not minutes; the numbers it prints then mean little).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import edgeprune as ep


def main(out: Path, quick: bool = False, checkpoint: Path | None = None) -> ep.BuildResult:
    out.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        checkpoint = train(out, epochs=2 if quick else 15)

    # One stage at a time: each call takes and returns ordinary Python objects.
    model = ep.load(checkpoint)
    data = ep.load_data("digits", model)  # checked against the model, normalized as trained
    tiny = {"stages": 1, "finetune_epochs": 1, "samples": 100, "resolutions": [0.3]}
    tiny = tiny if quick else {}
    pruned = ep.prune_model(model, data, out / "prune", ep.PruneConfig(**tiny),
                            on_progress=lambda task, done, total: None)
    ep.export_onnx(pruned.loaded, out / "pruned.onnx")
    row = ep.profile_onnx(out / "pruned.onnx", "jetson-nano", measure_host=not quick)
    logging.info("pruned: %s params, est. %.3f ms on %s", f"{row['params']:,}",
                 row["latency_ms"]["target_estimated"], "jetson-nano")

    # Or the whole pipeline in one call, with the same typed config the CLI builds.
    config = ep.BuildConfig(target="jetson-nano", model=checkpoint, data="digits",
                            out=out / "build", precision="fp16",
                            method="random" if quick else "mspic", prune=tiny,
                            measure_host=not quick)
    result = ep.build_model(config)
    for v in result.variants:
        acc = v.get("accuracy")
        logging.info("%-14s %-5s %8s params  acc %s", v["name"], v["precision"],
                     f"{v['params']:,}", f"{acc:.2%}" if acc is not None else "-")
    logging.info("report: %s", result.report)
    return result


def train(out: Path, epochs: int) -> Path:
    from edgeprune.checkpoint import save_checkpoint
    from edgeprune.train import TrainConfig, train_from_scratch

    trained = train_from_scratch("resnet20", ep.load_data("digits"),
                                 TrainConfig(epochs=epochs, seed=0))
    return save_checkpoint(out / "resnet20_digits.pt", trained.model, trained.info)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("api-demo"))
    parser.add_argument("--quick", action="store_true", help="tiny settings (the test's)")
    parser.add_argument("--model", type=Path, help="a trained checkpoint (default: train one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(args.out, args.quick, args.model)
