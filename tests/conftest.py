"""Shared fixtures: small real data and small real trained models, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from edgeprune.checkpoint import load_model, save_checkpoint
from edgeprune.data import load_dataset
from edgeprune.train import TrainConfig, train_from_scratch

REPO = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = REPO.parent / "shared" / "data" / "cifar10-subset.npz"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


def _train_checkpoint(path: Path, arch: str, data, epochs: int) -> Path:
    trained = train_from_scratch(arch, data, TrainConfig(epochs=epochs, seed=0))
    return save_checkpoint(path, trained.model, trained.info)


@pytest.fixture(scope="session")
def resnet20_digits_path(tmp_path_factory, digits) -> Path:
    """A ResNet-20 trained on digits for 8 epochs (≈3 s; ≈97% test accuracy)."""
    return _train_checkpoint(tmp_path_factory.mktemp("models") / "resnet20_digits.pt",
                             "resnet20", digits, epochs=8)


@pytest.fixture(scope="session")
def resnet20_digits_converged_path(tmp_path_factory, digits) -> Path:
    """A ResNet-20 trained on digits for 15 epochs, as `make demo` trains it (≈98% test)."""
    return _train_checkpoint(tmp_path_factory.mktemp("models") / "resnet20_digits_e15.pt",
                             "resnet20", digits, epochs=15)


@pytest.fixture()
def resnet20_digits(resnet20_digits_path):
    """A fresh copy (tests may modify it) of the trained ResNet-20 as a LoadedModel."""
    return load_model(resnet20_digits_path)


@pytest.fixture(scope="session")
def cifar_subset_path() -> Path:
    if not CIFAR_SUBSET.is_file():
        pytest.skip(f"the shared CIFAR-10 subset is not at {CIFAR_SUBSET}")
    return CIFAR_SUBSET
