"""Shared helper of the pruning benchmarks: a ResNet trained on the shared CIFAR-10 subset,
cached in benchmarks/cache/ (gitignored) so that reruns skip the training."""

from __future__ import annotations

from pathlib import Path

from edgeprune.checkpoint import data_for_model, load_model, save_checkpoint
from edgeprune.data import load_dataset
from edgeprune.train import TrainConfig, train_from_scratch

HERE = Path(__file__).resolve().parent
SUBSET = HERE.parents[1] / "shared" / "data" / "cifar10-subset.npz"
CACHE = HERE / "cache"
OUT = HERE / "out"


def trained(arch: str, epochs: int):
    """(LoadedModel, Dataset) for ``arch`` trained ``epochs`` epochs on the CIFAR-10 subset."""
    data = load_dataset(f"npz:{SUBSET}")
    path = CACHE / f"{arch}_cifar_subset_e{epochs}.pt"
    if not path.is_file():
        new = train_from_scratch(arch, data, TrainConfig(epochs=epochs, seed=0))
        save_checkpoint(path, new.model, new.info)
    loaded = load_model(path)
    return loaded, data_for_model(loaded, data)
