"""Synthetic stand-ins: written in the real formats, read by the real loaders, marked as stand-ins."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ambient_bench import DATASETS, UserError
from ambient_bench.datasets._paths import STANDIN_MARKER, standin_marker
from ambient_bench.datasets.standins import ANIMALS, CIFAR_CLASSES, write_standins

PER_CLASS = 4  # small: the loaders and counts are what is tested, not the volume
TRAIN, TEST = 2 * PER_CLASS, PER_CLASS // 2  # AFHQ images per animal


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("standins")
    counts = write_standins(folder, per_class=PER_CLASS)
    assert counts == {"cifar10": 50 * PER_CLASS, "cifar10_test": 10 * PER_CLASS, "ffhq": 10 * PER_CLASS,
                      **{k: v for a in ANIMALS for k, v in ((f"afhq_{a}", TRAIN), (f"afhq_{a}_test", TEST))},
                      "imagenet": 4 * (PER_CLASS // 2), "imagenet_val": 4}
    return folder


def build(root: Path, name: str, **params):
    return DATASETS.build({"name": name, "root": str(root), **params})


# (dataset parameters, number of images, image shape)
LOADS = [
    ({"name": "cifar10"}, 50 * PER_CLASS, (3, 32, 32)),
    ({"name": "cifar10", "split": "test"}, 10 * PER_CLASS, (3, 32, 32)),
    *[({"name": "afhq", "animal": a, "split": "all", "resolution": 64}, TRAIN + TEST, (3, 64, 64)) for a in ANIMALS],
    ({"name": "afhq", "animal": "dog", "split": "test"}, TEST, (3, 64, 64)),
    ({"name": "ffhq", "resolution": 64}, 10 * PER_CLASS, (3, 64, 64)),
    ({"name": "imagenet", "resolution": 64}, 4 * (PER_CLASS // 2), (3, 64, 64)),
    ({"name": "imagenet", "split": "val", "resolution": 32}, 4, (3, 32, 32)),
]


@pytest.mark.parametrize("params, n, shape", LOADS, ids=["-".join(map(str, p.values())) for p, _, _ in LOADS])
def test_real_loaders_read_standins(root, params, n, shape):
    dataset = build(root, **params)
    data = dataset.load()
    assert data.images.dtype == torch.uint8 and tuple(data.images.shape) == (n, *shape)
    assert dataset.count() == len(data) == n
    assert data.images.float().std() > 20  # pictures, not flat fields
    k = min(3, n - 1)
    limited = build(root, **params, limit=k)
    assert limited.count() == k and torch.equal(limited.load().images, data.images[:k])
    assert build(root, **params, limit=10 ** 6).count() == n


def test_cifar_standin_is_shaped_like_the_official_files(root):
    folder = root / "cifar-10-batches-py"
    with open(folder / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"batch_label"] == b"training batch 2 of 5"
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (10 * PER_CLASS, 3072)
    assert all(type(label) is int for label in batch[b"labels"])
    assert sorted(batch[b"labels"]) == sorted(list(range(10)) * PER_CLASS)  # every class, per_class times
    assert all(isinstance(name, bytes) for name in batch[b"filenames"])
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert meta == {b"num_cases_per_batch": 10 * PER_CLASS, b"num_vis": 3072,
                    b"label_names": [name.encode() for name in CIFAR_CLASSES]}
    train = build(root, "cifar10").load()
    assert sorted(set(train.labels.tolist())) == list(range(10))
    assert torch.bincount(train.labels).tolist() == [5 * PER_CLASS] * 10


def test_classes_are_told_apart_by_their_colours(root):
    """Nearest class centroid of the mean colour: far above chance (0.1) on the test split."""
    train, test = build(root, "cifar10").load(), build(root, "cifar10", split="test").load()
    features = [d.images.float().mean((2, 3)) for d in (train, test)]
    centroids = torch.stack([features[0][train.labels == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(features[1], centroids).argmin(1) == test.labels).float().mean()
    assert accuracy > 0.7, accuracy


def test_official_layouts(root):
    assert (root / "ffhq" / "thumbnails128x128" / "00000" / "00000.png").is_file()
    names = sorted(p.name for p in (root / "afhq" / "train" / "wild").iterdir())
    assert names[:2] == ["flickr_wild_000000.png", "flickr_wild_000002.png"]
    assert (root / "afhq" / "test" / "cat" / "flickr_cat_000001.png").is_file()
    text = (root / STANDIN_MARKER).read_text()
    assert "NOT the real" in text and f"per_class: {PER_CLASS}" in text


def test_afhq_all_is_train_then_test(root):
    all_images = build(root, "afhq", animal="cat", split="all", resolution=64).load().images
    train = build(root, "afhq", animal="cat", resolution=64).load().images
    test = build(root, "afhq", animal="cat", split="test", resolution=64).load().images
    assert torch.equal(all_images, torch.cat([train, test]))


def test_fingerprint_marks_standins_only(root, tmp_path):
    specs = [{"name": "cifar10"}, {"name": "afhq", "animal": "wild"}, {"name": "ffhq"}]
    expected = standin_marker(root)
    assert expected is not None and len(expected) == 16
    for spec in specs:
        assert build(root, **spec).fingerprint() == {"standin": expected}
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / STANDIN_MARKER).unlink()
    for spec in specs:
        assert build(copy, **spec).fingerprint() == {}
        assert build(copy, **spec).count() == build(root, **spec).count()  # same files otherwise
    assert DATASETS.build({"name": "digits"}).fingerprint() == {}


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_deterministic_and_rewritable(tmp_path):
    first = write_standins(tmp_path / "a", per_class=2, seed=3)
    assert write_standins(tmp_path / "b", per_class=2, seed=3) == first
    files = files_of(tmp_path / "a")
    assert len(files) == 1 + 7 + 20 + 3 * (4 + 1) + 4 * 2  # marker, cifar files, ffhq, afhq, imagenet
    assert files == files_of(tmp_path / "b")
    write_standins(tmp_path / "c", per_class=2, seed=4)
    other = files_of(tmp_path / "c")
    assert other["ffhq/thumbnails128x128/00000/00000.png"] != files["ffhq/thumbnails128x128/00000/00000.png"]
    assert standin_marker(tmp_path / "c") != standin_marker(tmp_path / "a")
    # writing again over stand-ins replaces them, leaving nothing of the larger set behind
    write_standins(tmp_path / "a", per_class=1, seed=3)
    assert build(tmp_path / "a", "ffhq").count() == 10
    assert build(tmp_path / "a", "afhq", split="all").count() == 2 + 1


def test_refuses_a_folder_that_may_hold_real_data(tmp_path):
    real = tmp_path / "data"
    (real / "afhq").mkdir(parents=True)
    (real / "afhq" / "mine.png").write_bytes(b"precious")
    with pytest.raises(UserError) as info:
        write_standins(real)
    message = str(info.value)
    assert "\n" not in message and str(real) in message and STANDIN_MARKER in message
    assert (real / "afhq" / "mine.png").read_bytes() == b"precious" and not (real / STANDIN_MARKER).exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        write_standins(tmp_path / "file")
    with pytest.raises(UserError, match="per_class"):
        write_standins(tmp_path / "new", per_class=0)
    (tmp_path / "empty").mkdir()
    assert write_standins(tmp_path / "empty", per_class=1)["afhq_cat_test"] == 1  # an empty folder is fine


def test_imagenet_labels_are_the_sorted_class_folders_and_the_crop_is_edm2s(root):
    from PIL import Image

    from ambient_bench.datasets.imagenet import center_crop_dhariwal

    data = build(root, "imagenet", resolution=32).load()
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    wide = Image.new("RGB", (300, 200), (0, 0, 0))
    wide.paste((255, 255, 255), (140, 0, 160, 200))  # a white bar in the middle survives the centre crop
    out = center_crop_dhariwal(wide, 50)  # 300×200 → box-halved to 150×100 → bicubic 75×50 → crop 50×50
    assert out.shape == (3, 50, 50) and out[:, :, 25].min() > 200 and out[:, :, 0].max() < 30
