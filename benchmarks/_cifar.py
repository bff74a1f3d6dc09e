"""Shared helper of the pruning benchmarks: a ResNet trained on the shared CIFAR-10 subset,
cached in benchmarks/cache/ (gitignored) so that reruns skip the training."""

from __future__ import annotations

from pathlib import Path

from edgeprune.checkpoint import ModelInfo, data_for_model, load_model, save_checkpoint
from edgeprune.data import load_dataset
from edgeprune.models import create_model
from edgeprune.train import TrainConfig, seed_everything, train

HERE = Path(__file__).resolve().parent
SUBSET = HERE.parents[1] / "shared" / "data" / "cifar10-subset.npz"
CACHE = HERE / "cache"
OUT = HERE / "out"


def trained(arch: str, epochs: int):
    """(LoadedModel, Dataset) for ``arch`` trained ``epochs`` epochs on the CIFAR-10 subset."""
    data = load_dataset(f"npz:{SUBSET}")
    path = CACHE / f"{arch}_cifar_subset_e{epochs}.pt"
    if not path.is_file():
        seed_everything(0)  # initial weights included: the cached model is reproducible
        model = create_model(arch, num_classes=data.num_classes)
        train(model, data, TrainConfig(epochs=epochs, seed=0))
        save_checkpoint(path, model, ModelInfo(arch, data.num_classes, data.input_shape,
                                               data.mean, data.std, data.class_names))
    loaded = load_model(path)
    return loaded, data_for_model(loaded, data)
