"""Every data spec, on small files the tests make, plus the bundled digits."""

import pickle

import numpy as np
import pytest
from edgeprune.data import load_dataset
from edgeprune.errors import EdgepruneError


def _images(n, shape=(3, 32, 32), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_digits_splits_are_disjoint_and_stratified():
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert np.bincount(ds.val.y).min() >= 12  # every class in the validation split
    x, _ = next(ds.batches("train", 32))
    assert x.shape == (32, 1, 8, 8) and abs(float(x.mean())) < 0.5


def test_npz_nhwc_and_nchw(tmp_path):
    y = np.arange(40) % 4
    nhwc = tmp_path / "a.npz"
    np.savez(nhwc, x_train=_images(40, (16, 16, 3)), y_train=y, x_test=_images(8, (16, 16, 3)),
             y_test=y[:8])
    ds = load_dataset(f"npz:{nhwc}")
    assert ds.input_shape == (3, 16, 16) and ds.num_classes == 4
    nchw = tmp_path / "b.npz"
    np.savez(nchw, x_train=_images(40, (3, 16, 16)), y_train=y, x_test=_images(8, (3, 16, 16)),
             y_test=y[:8])
    assert load_dataset(f"npz:{nchw}").input_shape == (3, 16, 16)


def test_npz_missing_keys_is_clear(tmp_path):
    f = tmp_path / "bad.npz"
    np.savez(f, x_train=_images(4))
    with pytest.raises(EdgepruneError, match="lacks the keys"):
        load_dataset(f"npz:{f}")


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, 20))}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    ds = load_dataset(f"cifar10:{tmp_path}")
    assert ds.input_shape == (3, 32, 32) and len(ds.train) + len(ds.val) == 100
    assert ds.mean[0] == pytest.approx(0.4914)
    x, _ = next(ds.batches("train", 8, shuffle=True, augment=True))
    assert x.shape == (8, 3, 32, 32)


def test_cifar10_batch_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(EdgepruneError, match="refusing to load builtins.print"):
        load_dataset(f"cifar10:{tmp_path}")


def test_imagefolder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"{i}.png")
    ds = load_dataset(f"imagefolder:{tmp_path}")
    assert ds.class_names == ["cat", "dog"] and ds.input_shape == (3, 12, 12)
    assert len(ds.test) == 4


@pytest.mark.parametrize("spec,match", [("mnist:foo", "unknown data spec"),
                                        ("npz:/nonexistent.npz", "does not exist"),
                                        ("cifar10:", "needs a path")])
def test_bad_specs(spec, match):
    with pytest.raises(EdgepruneError, match=match):
        load_dataset(spec)


def test_stratified_sample_is_seeded():
    ds = load_dataset("digits")
    a, b = ds.sample("train", 100, seed=3), ds.sample("train", 100, seed=3)
    assert np.array_equal(a.y, b.y) and len(a) == 100
    assert np.bincount(a.y).min() >= 9


def test_cifar_subset_through_npz(cifar_subset_path):
    ds = load_dataset(f"npz:{cifar_subset_path}")
    assert ds.input_shape == (3, 32, 32) and ds.class_names[0] == "airplane"
    assert len(ds.train) == 4500 and len(ds.val) == 500 and len(ds.test) == 1000


def _npz(path, y_train, n_test=10):
    x = np.zeros((len(y_train), 1, 8, 8), np.uint8)
    np.savez(path, x_train=x, y_train=y_train, x_test=x[:n_test], y_test=np.arange(n_test) % 10)
    return f"npz:{path}"


def test_small_data_validates_every_class(tmp_path):
    """10% of 20 images is 2: the hold-out takes one per class instead, and trains on the rest."""
    ds = load_dataset(_npz(tmp_path / "small.npz", np.arange(20) % 10))
    assert sorted(ds.val.y) == list(range(10)) and sorted(ds.train.y) == list(range(10))


def test_large_data_split_is_unchanged_by_the_class_minimum(digits):
    # The per-class minimum only acts where a class would be missing: digits keeps its split.
    from edgeprune.data import SPLIT_SEED, _stratified_indices

    y = np.concatenate([digits.train.y, digits.val.y])
    n = round(len(y) * 0.1)
    assert np.array_equal(_stratified_indices(y, n, SPLIT_SEED),
                          _stratified_indices(y, n, SPLIT_SEED, min_per_class=1))


def test_whole_float_and_column_labels_are_accepted(tmp_path):
    y = (np.arange(40) % 10).astype(np.float32)
    assert load_dataset(_npz(tmp_path / "f.npz", y)).num_classes == 10
    assert load_dataset(_npz(tmp_path / "c.npz", y.astype(np.int32)[:, None])).num_classes == 10


def test_imagefolder_classes_must_match_the_checkpoint(digits):
    from edgeprune.checkpoint import ModelInfo, check_model_fits_data

    ds = digits
    folder = type(ds)("imagefolder:x", ds.train, ds.val, ds.test, [f"c{i}" for i in range(10)],
                      ds.mean, ds.std)
    info = ModelInfo("resnet20", 10, (1, 8, 8), class_names=[f"c{i}" for i in range(10)])
    check_model_fits_data(info, folder)  # same names, same order: fine
    info.class_names = info.class_names[::-1]
    with pytest.raises(EdgepruneError, match="labels would be swapped"):
        check_model_fits_data(info, folder)
    check_model_fits_data(info, ds)  # digits numbers its classes: names are not compared
