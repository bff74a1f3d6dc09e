"""imagefolder data of mixed sizes and formats, read on demand (edgeprune.imagefiles)."""

from __future__ import annotations

import numpy as np
import pytest
from edgeprune.data import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.imagefiles import ImageFiles, read_image


def _folder(root, n_train=6, n_val=2, classes=("cat", "dog")):
    """JPEGs of mixed sizes, plus a grayscale PNG and an RGBA WebP per class, in the layout
    imagefolder reads. Class k's images are bright in channel k, so a model can tell them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for k, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(20, 70, 2))
                px = rng.integers(0, 100, (h, w, 3), dtype=np.uint8)
                px[..., k] += 150
                im = Image.fromarray(px)
                if i == 0:
                    im.convert("L").save(folder / f"{i}.png")
                elif i == 1:
                    im.convert("RGBA").save(folder / f"{i}.webp")
                else:
                    im.save(folder / f"{i}.jpg", quality=90)
    return root


def test_mixed_jpegs_are_read_lazily_resized_and_cropped(tmp_path):
    ds = load_dataset(f"imagefolder:{_folder(tmp_path)}")
    assert isinstance(ds.train.x, ImageFiles)  # names only, no pixels held
    assert ds.input_shape[0] == 3 and len(ds.test) == 4 and len(ds.train) + len(ds.val) == 12
    assert "statistics" in ds.extra["normalization_source"]
    small = ds.resized((16, 16))
    batches = list(small.batches("train", 4))
    assert tuple(batches[0][0].shape) == (4, 3, 16, 16)
    assert sum(len(y) for _, y in batches) == len(ds.train)
    x = np.asarray(small.test.x)
    assert x.dtype == np.uint8 and x.shape == (4, 3, 16, 16)
    # class 1 ("dog") is bright in the green channel after resizing and cropping
    dog = x[ds.test.y == 1]
    assert dog[:, 1].mean() > dog[:, 0].mean() + 50


def test_api_input_size(tmp_path):
    from edgeprune import api

    data = api.load_data(f"imagefolder:{_folder(tmp_path)}", input_size=24)
    assert data.input_shape == (3, 24, 24)
    assert np.asarray(data.val.x).shape[1:] == (3, 24, 24)


def test_resize_keeps_the_centre(tmp_path):
    from PIL import Image

    px = np.zeros((100, 300, 3), np.uint8)
    px[:, 100:200] = 255  # a white centre square between black sides
    Image.fromarray(px).save(tmp_path / "wide.png")
    x = read_image(tmp_path / "wide.png", (32, 32))
    # shorter side 100 → round(32 × 256/224) = 37, width 111; the 32-wide centre crop is white
    assert x.shape == (3, 32, 32) and x.min() > 200


def test_grayscale_and_rgba_become_rgb(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((8, 8, 4), 200, np.uint8)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "g.png", (8, 8)).tolist() == np.full((3, 8, 8), 77).tolist()
    assert read_image(tmp_path / "a.png", (8, 8)).shape == (3, 8, 8)


def test_a_corrupt_jpeg_is_named_before_any_work(tmp_path):
    root = _folder(tmp_path)
    bad = root / "train" / "dog" / "3.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(EdgepruneError, match=r"3\.jpg is not a readable image") as e:
        load_dataset(f"imagefolder:{root}")
    assert "\n" not in str(e.value)


def test_a_file_broken_after_loading_is_one_line_from_the_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_WORKERS", "1")
    root = _folder(tmp_path)
    ds = load_dataset(f"imagefolder:{root}").resized((16, 16))
    (root / "train" / "cat" / "4.jpg").write_bytes(b"gone")
    with pytest.raises(EdgepruneError, match=r"4\.jpg is not a readable image") as e:
        list(ds.batches("train", 2))
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_train_and_prune_pipeline_takes_the_models_size(tmp_path):
    """A model trained at 16×16 on JPEG folders; the same folders then load at its size."""
    from edgeprune import api
    from edgeprune.checkpoint import save_checkpoint
    from edgeprune.train import TrainConfig, evaluate, train_from_scratch

    ds = load_dataset(f"imagefolder:{_folder(tmp_path / 'img')}").resized((16, 16))
    trained = train_from_scratch("resnet20", ds, TrainConfig(epochs=3, seed=0, batch_size=4))
    path = save_checkpoint(tmp_path / "m.pt", trained.model, trained.info)
    model = api.load(path)
    data = api.load_data(f"imagefolder:{tmp_path / 'img'}", model)
    assert data.input_shape == (3, 16, 16)
    assert data.extra["normalization_source"] == "checkpoint"
    assert evaluate(model.model, data, "test").accuracy >= 0.75
