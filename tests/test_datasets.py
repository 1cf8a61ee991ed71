"""Datasets: file-based ones on synthetic files in tmp_path, generated ones on their own."""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ambient_bench import DATASETS, UserError
from ambient_bench.components import HIGH_QUALITY, LOW_QUALITY, OUT_OF_DISTRIBUTION
from ambient_bench.datasets import _paths
from ambient_bench.datasets.natural_patches import PHOTOS, _photo_array

FILE_BASED = ("cifar10", "image_folder", "afhq", "ffhq", "user_folders", "edm_zip")
GENERATED = ("natural_patches", "dead_leaves", "procedural_texture")


def build(name: str, **params):
    return DATASETS.build({"name": name, **params})


def user_error(fn, *needles) -> str:
    """Run ``fn``, expect a one-line UserError mentioning every needle; return the message."""
    with pytest.raises(UserError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, (needle, message)
    return message


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def solid(h: int, w: int, rgb=(10, 200, 30)) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3))


def test_registered_with_needs_files():
    names = DATASETS.names()
    for name in FILE_BASED + GENERATED:
        assert name in names
        cls = DATASETS.get(name)
        assert cls.version == 1 and cls.summary()
        assert cls.needs_files is (name in FILE_BASED)
        cls(**cls.test_params)  # the placeholder test parameters validate


def test_data_root_and_user_paths(monkeypatch, tmp_path):
    monkeypatch.delenv("AMBIENT_BENCH_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _paths.data_root() == tmp_path / "home" / ".cache" / "ambient_bench" / "datasets"
    monkeypatch.setenv("AMBIENT_BENCH_DATA", "~/data")
    assert _paths.data_root() == tmp_path / "home" / "data"
    monkeypatch.chdir(tmp_path)
    assert _paths.user_path("rel/dir") == tmp_path / "rel" / "dir"


# --- CIFAR-10 -------------------------------------------------------------------------------

def write_cifar(root: Path, sizes=(2, 1, 3, 1, 2), test=3) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = [(f"data_batch_{i + 1}", n) for i, n in enumerate(sizes)] + [("test_batch", test)]
    for k, (name, n) in enumerate(files):
        rows = np.random.default_rng(k).integers(0, 256, (n, 3072), dtype=np.uint8)
        rows[:, 0] = k  # first red pixel names the file, to check the order
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": [(k + j) % 10 for j in range(n)],
                         b"batch_label": name.encode()}, f)


def test_cifar10_reads_batches_in_order(tmp_path):
    write_cifar(tmp_path)
    train = build("cifar10", root=str(tmp_path)).load()
    assert train.images.shape == (9, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.images[:, 0, 0, 0].tolist() == [0, 0, 1, 2, 2, 2, 3, 4, 4]
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 1, 1, 2, 3, 4, 3, 4, 5]
    assert train.source is None
    # rows are CHW planes: the pixel at (c, y, x) is byte c*1024 + y*32 + x of its row
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        row = pickle.load(f, encoding="bytes")[b"data"][1]
    assert train.images[1, 2, 5, 7] == row[2 * 1024 + 5 * 32 + 7]
    test = build("cifar10", root=str(tmp_path), split="test").load()
    assert len(test) == 3 and test.images[:, 0, 0, 0].tolist() == [5, 5, 5]
    assert build("cifar10", root=str(tmp_path)).load().content_hash() == train.content_hash()


def test_cifar10_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("AMBIENT_BENCH_DATA", str(tmp_path / "data"))
    dataset = build("cifar10")
    expected = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    user_error(dataset.check, expected, url, tmp_path / "data")
    user_error(dataset.load, expected, url)
    write_cifar(tmp_path / "data")
    (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_4").unlink()
    user_error(dataset.check, "data_batch_4")
    build("cifar10", split="test").check()  # the test split is complete
    build("cifar10", download=True).check()  # would download at load (not run: no network)


# --- folders --------------------------------------------------------------------------------

def same_as_load(dataset, loaded=None) -> None:
    """The dataset's per-image reader (for pools streamed from disk) gives load()'s images, labels
    and sources bit for bit, also through a pickled copy (what a DataLoader worker gets)."""
    import pickle

    loaded = loaded or dataset.load()
    reader = pickle.loads(pickle.dumps(dataset.reader()))
    assert len(reader) == len(loaded) and tuple(reader.shape) == tuple(loaded.images.shape[1:])
    assert torch.equal(torch.stack([reader[i] for i in range(len(reader))]), loaded.images)
    for name in ("labels", "source"):
        ours, theirs = getattr(reader, name), getattr(loaded, name)
        assert (ours is None and theirs is None) or torch.equal(ours, theirs), name


def test_image_folder_order_resize_and_labels(tmp_path, monkeypatch):
    stripes = np.concatenate([solid(10, 10, (255, 0, 0)), solid(10, 10, (0, 255, 0)),
                              solid(10, 10, (0, 0, 255))], axis=1)  # 10×30: centre crop is green
    write_png(tmp_path / "imgs" / "b" / "wide.png", stripes)
    big = write_png(tmp_path / "imgs" / "a" / "z.png", noise(50, 40, 1))
    write_png(tmp_path / "imgs" / "a" / "sub" / "y.png", solid(16, 16, (1, 2, 3)))
    Image.fromarray(noise(20, 20, 2).astype(np.uint8)).save(tmp_path / "imgs" / "b" / "c.jpg")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "imgs" / "b" / "._wide.png", solid(4, 4))  # macOS metadata, skipped
    monkeypatch.chdir(tmp_path)  # relative paths are relative to the current directory
    data = build("image_folder", path="imgs", resolution=16, labels_from_subfolders=True).load()
    assert data.images.shape == (4, 3, 16, 16) and data.images.dtype == torch.uint8
    # sorted by relative path: a/sub/y.png, a/z.png, b/c.jpg, b/wide.png
    assert (data.images[0].flatten(1).T == torch.tensor([1, 2, 3])).all()
    assert (data.images[3].flatten(1).T == torch.tensor([0, 255, 0])).all()  # crop kept the middle
    assert data.labels.tolist() == [0, 0, 1, 1]
    # the policy: centre-crop to a square (offset rounded down), then LANCZOS
    with Image.open(big) as picture:
        expected = np.asarray(picture.crop((0, 5, 40, 45)).resize((16, 16), Image.LANCZOS))
    assert np.array_equal(data.images[1].permute(1, 2, 0).numpy(), expected)
    grey = build("image_folder", path=str(tmp_path / "imgs"), resolution=8, channels=1).load()
    assert grey.images.shape == (4, 1, 8, 8) and grey.labels is None
    assert build("image_folder", path="imgs", resolution=16).load().content_hash() == data.content_hash()
    same_as_load(build("image_folder", path="imgs", resolution=16, labels_from_subfolders=True), data)


def test_image_folder_errors(tmp_path):
    user_error(lambda: build("image_folder", path=str(tmp_path)), "missing required key 'resolution'")
    user_error(build("image_folder", path=str(tmp_path / "nope"), resolution=16).check, tmp_path / "nope")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    user_error(build("image_folder", path=str(tmp_path / "empty"), resolution=16).load,
               "no images (png/jpg/jpeg/webp/bmp) under", tmp_path / "empty")
    write_png(tmp_path / "loose" / "top.png", solid(8, 8))
    user_error(build("image_folder", path=str(tmp_path / "loose"), resolution=8,
                     labels_from_subfolders=True).load, "top.png")


def test_afhq_layout_and_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("AMBIENT_BENCH_DATA", str(tmp_path))
    for k in (2, 0, 1):
        write_png(tmp_path / "afhq" / "train" / "cat" / f"flickr_cat_{k:06d}.png", solid(24, 24, (k, k, k)))
    data = build("afhq", resolution=16).load()
    assert data.images.shape == (3, 3, 16, 16) and data.labels is None
    assert data.images[:, 0, 0, 0].tolist() == [0, 1, 2]
    url = "https://github.com/clovaai/stargan-v2"
    user_error(build("afhq", animal="dog").check, tmp_path / "afhq" / "train" / "dog", url)
    user_error(build("afhq", split="test").load, tmp_path / "afhq" / "test" / "cat", url)
    user_error(build("afhq", root=str(tmp_path / "x")).check, tmp_path / "x" / "afhq" / "train" / "cat")


def test_afhq_split_all_is_train_then_test(tmp_path):
    # numbers interleave across splits, as in AFHQv2: "all" must not sort them together
    for split, numbers in (("train", (0, 3)), ("test", (1, 2))):
        for k in numbers:
            write_png(tmp_path / "afhq" / split / "dog" / f"flickr_dog_{k:06d}.png", solid(16, 16, (k, k, k)))
    dataset = build("afhq", root=str(tmp_path), animal="dog", split="all", resolution=16)
    assert dataset.load().images[:, 0, 0, 0].tolist() == [0, 3, 1, 2] and dataset.count() == 4
    limited = build("afhq", root=str(tmp_path), animal="dog", split="all", resolution=16, limit=3)
    assert limited.load().images[:, 0, 0, 0].tolist() == [0, 3, 1] and limited.count() == 3
    (tmp_path / "afhq" / "test" / "dog" / "flickr_dog_000001.png").unlink()
    (tmp_path / "afhq" / "test" / "dog" / "flickr_dog_000002.png").unlink()
    for fn in (dataset.check, dataset.count, dataset.load):  # "all" needs both splits
        user_error(fn, "no images", tmp_path / "afhq" / "test" / "dog")


def test_limit_takes_the_first_images_and_enters_the_key(tmp_path, monkeypatch):
    for name, value in (("b/2.png", 2), ("a/1.png", 1), ("c/3.png", 3), ("a/0.png", 0)):
        write_png(tmp_path / "imgs" / name, solid(8, 8, (value,) * 3))
    monkeypatch.chdir(tmp_path)
    full = build("image_folder", path="imgs", resolution=8, labels_from_subfolders=True)
    limited = build("image_folder", path="imgs", resolution=8, labels_from_subfolders=True, limit=3)
    assert full.count() == 4 and limited.count() == 3
    data = limited.load()
    assert data.images[:, 0, 0, 0].tolist() == [0, 1, 2] and data.labels.tolist() == [0, 0, 1]
    assert limited.spec()["params"]["limit"] == 3 and full.spec()["params"].get("limit") is None
    assert build("image_folder", path="imgs", resolution=8, limit=100).count() == 4
    user_error(lambda: build("image_folder", path="imgs", resolution=8, limit=0), "must be ≥ 1")
    zipped = write_zip(tmp_path / "ds.zip", {f"{k}.png": solid(8, 8, (k,) * 3) for k in (2, 0, 1)},
                       {"labels": [[f"{k}.png", k] for k in (0, 1, 2)]})
    edm = build("edm_zip", path=str(zipped), limit=2)
    assert edm.count() == 2 and build("edm_zip", path=str(zipped)).count() == 3
    assert edm.load().labels.tolist() == [0, 1]
    write_cifar(tmp_path / "c")
    cifar = build("cifar10", root=str(tmp_path / "c"), limit=4)
    assert cifar.count() == 4 and cifar.load().images[:, 0, 0, 0].tolist() == [0, 0, 1, 2]
    assert build("cifar10", root=str(tmp_path / "c"), split="test", limit=5).count() == 3


def test_count_without_loading(tmp_path):
    for folder, n in (("good", 2), ("bad", 3)):
        for k in range(n):
            write_png(tmp_path / folder / f"{k}.png", solid(8, 8))
    users = build("user_folders", high_quality=str(tmp_path / "good"), low_quality=[str(tmp_path / "bad")],
                  resolution=8)
    assert users.count() == 5 == len(users.load())
    write_cifar(tmp_path / "data")
    assert build("cifar10", root=str(tmp_path / "data")).count() == 9
    assert build("cifar10", root=str(tmp_path / "none"), download=True).count() == 50_000  # the official size
    assert build("digits").count() == 1797 and build("digits", classes=[3]).count() == 183
    for name in GENERATED:
        assert build(name, count=5).count() == 5
    user_error(build("dead_leaves", rmin=0.5, rmax=0.2).count, "rmin")
    user_error(build("cifar10", root=str(tmp_path / "none")).count, tmp_path / "none" / "cifar-10-batches-py")
    user_error(build("ffhq", root=str(tmp_path / "none")).count, tmp_path / "none" / "ffhq")
    user_error(build("edm_zip", path=str(tmp_path / "no.zip")).count, tmp_path / "no.zip")
    (tmp_path / "not.zip").write_text("x")
    user_error(build("edm_zip", path=str(tmp_path / "not.zip")).count, "not a zip file")


def test_ffhq_any_depth(tmp_path):
    for k in range(3):
        write_png(tmp_path / "ffhq" / "thumbnails128x128" / "00000" / f"{k:05d}.png", noise(128, 128, k))
    data = build("ffhq", root=str(tmp_path)).load()
    assert data.images.shape == (3, 3, 64, 64)
    with Image.open(tmp_path / "ffhq" / "thumbnails128x128" / "00000" / "00001.png") as picture:
        expected = np.asarray(picture.resize((64, 64), Image.LANCZOS))
    assert np.array_equal(data.images[1].permute(1, 2, 0).numpy(), expected)
    user_error(build("ffhq", root=str(tmp_path / "none")).check, tmp_path / "none" / "ffhq",
               "https://github.com/NVlabs/ffhq-dataset", "thumbnails128x128")


def test_user_folders_sources_and_order(tmp_path):
    for folder, n, value in (("good", 2, 10), ("bad1", 3, 20), ("bad2", 1, 30), ("ood", 2, 40)):
        for k in range(n):
            write_png(tmp_path / folder / f"{k}.png", solid(12 + k, 20, (value + k,) * 3))
    data = build("user_folders", high_quality=str(tmp_path / "good"),
                 low_quality=[str(tmp_path / "bad1"), str(tmp_path / "bad2")],
                 out_of_distribution=[str(tmp_path / "ood")], resolution=8, channels=1).load()
    assert data.images.shape == (8, 1, 8, 8) and data.labels is None
    assert data.images[:, 0, 0, 0].tolist() == [10, 11, 20, 21, 22, 30, 40, 41]
    assert data.source.dtype == torch.int8
    assert data.source.tolist() == [HIGH_QUALITY] * 2 + [LOW_QUALITY] * 4 + [OUT_OF_DISTRIBUTION] * 2
    same_as_load(build("user_folders", high_quality=str(tmp_path / "good"),
                       low_quality=[str(tmp_path / "bad1"), str(tmp_path / "bad2")],
                       out_of_distribution=[str(tmp_path / "ood")], resolution=8, channels=1), data)
    no_ood = build("user_folders", high_quality=str(tmp_path / "good"), low_quality=[str(tmp_path / "bad2")],
                   resolution=8).load()
    assert no_ood.source.tolist() == [HIGH_QUALITY] * 2 + [LOW_QUALITY]
    user_error(build("user_folders", high_quality=str(tmp_path / "good"),
                     low_quality=[str(tmp_path / "bad1"), str(tmp_path / "gone")], resolution=8).check,
               "low_quality[1]", tmp_path / "gone")
    (tmp_path / "empty").mkdir()
    user_error(build("user_folders", high_quality=str(tmp_path / "good"), low_quality=[],
                     out_of_distribution=[str(tmp_path / "empty")], resolution=8).load,
               "out_of_distribution[0]", "no images", tmp_path / "empty")


# --- EDM zip --------------------------------------------------------------------------------

def write_zip(path: Path, images: dict[str, np.ndarray], meta: object = "absent") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in images.items():
            buffer = io.BytesIO()
            Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
            archive.writestr(name, buffer.getvalue())
        if meta != "absent":
            archive.writestr("dataset.json", json.dumps(meta))
    return path


def test_edm_zip_labels_order_and_sizes(tmp_path):
    names = ["00001/img00001000.png", "00000/img00000001.png", "00000/img00000000.png"]
    images = {n: solid(8, 8, (k, k, k)) for k, n in enumerate(names)}
    labels = [[n, 7 - k] for k, n in enumerate(names)]  # listed in another order than sorted
    path = write_zip(tmp_path / "ds.zip", images, {"labels": labels})
    data = build("edm_zip", path=str(path)).load()
    assert data.images.shape == (3, 3, 8, 8)  # native size kept
    assert data.images[:, 0, 0, 0].tolist() == [2, 1, 0]  # sorted names
    assert data.labels.tolist() == [5, 6, 7]
    assert build("edm_zip", path=str(path)).load().content_hash() == data.content_hash()
    assert build("edm_zip", path=str(write_zip(tmp_path / "null.zip", images, {"labels": None}))).load().labels is None
    grey = write_zip(tmp_path / "grey.zip", {"a.png": np.full((8, 8), 9), "b.png": np.full((8, 8), 3)})
    loaded = build("edm_zip", path=str(grey)).load()
    assert loaded.images.shape == (2, 1, 8, 8) and loaded.labels is None
    same_as_load(build("edm_zip", path=str(path)), data)
    same_as_load(build("edm_zip", path=str(grey)), loaded)
    mixed = write_zip(tmp_path / "mixed.zip", {"a.png": solid(8, 8), "b.png": noise(12, 10, 0),
                                               "__MACOSX/._a.png": solid(2, 2), "readme.txt": solid(1, 1)})
    user_error(build("edm_zip", path=str(mixed)).load, "different sizes", "resolution")
    user_error(build("edm_zip", path=str(mixed)).reader, "different sizes", "resolution")
    same_as_load(build("edm_zip", path=str(mixed), resolution=16))
    assert build("edm_zip", path=str(mixed), resolution=16).load().images.shape == (2, 3, 16, 16)


def test_edm_zip_errors(tmp_path):
    user_error(build("edm_zip", path=str(tmp_path / "no.zip")).check, tmp_path / "no.zip",
               "https://github.com/NVlabs/edm")
    user_error(build("edm_zip", path=str(tmp_path / "no.zip")).load, tmp_path / "no.zip")
    empty = write_zip(tmp_path / "empty.zip", {}, {"labels": None})
    user_error(build("edm_zip", path=str(empty)).load, "no images")
    partial = write_zip(tmp_path / "partial.zip", {"a.png": solid(8, 8), "b.png": solid(8, 8)},
                        {"labels": [["a.png", 1]]})
    user_error(build("edm_zip", path=str(partial)).load, "b.png")


# --- generated datasets ---------------------------------------------------------------------

@pytest.mark.parametrize("name", PHOTOS)
def test_each_bundled_photo_loads_offline(name):
    photo = _photo_array(name)
    assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] >= 3
    assert min(photo.shape[:2]) >= 300 and photo.std() > 20


def test_natural_patches():
    data = build("natural_patches", count=120).load()
    assert data.images.shape == (120, 3, 32, 32) and data.images.dtype == torch.uint8
    assert set(data.labels.tolist()) == set(range(len(PHOTOS)))  # every photo is used
    few = build("natural_patches", count=5).load()
    assert torch.equal(few.images, data.images[:5]) and torch.equal(few.labels, data.labels[:5])
    assert data.images.float().std() > 30  # not flat
    assert len({img.numpy().tobytes() for img in data.images}) == 120  # all different
    grey = build("natural_patches", count=4, channels=1, resolution=16).load()
    assert grey.images.shape == (4, 1, 16, 16)
    assert build("natural_patches", count=5).load().content_hash() == few.content_hash()


def radial_power_slope(images: torch.Tensor, low: int, high: int) -> float:
    """Slope of log radially averaged power vs log frequency (cycles per image), luma, Hann window."""
    x = (images.double().numpy() * np.array([0.299, 0.587, 0.114])[None, :, None, None]).sum(1)
    n = x.shape[-1]
    x = x - x.mean(axis=(1, 2), keepdims=True)
    window = np.hanning(n)
    power = (np.abs(np.fft.fft2(x * np.outer(window, window))) ** 2).mean(0)
    f = np.fft.fftfreq(n) * n
    ring = np.round(np.hypot(f[:, None], f[None, :])).astype(int).ravel()
    profile = np.bincount(ring, power.ravel()) / np.bincount(ring)
    k = np.arange(low, high + 1)
    return float(np.polyfit(np.log(k), np.log(profile[k]), 1)[0])


def test_dead_leaves_power_law_and_determinism():
    data = build("dead_leaves", count=200).load()
    assert data.images.shape == (200, 3, 32, 32) and data.labels is None
    slope = radial_power_slope(data.images, 2, 15)  # measured: -1.95 with the defaults
    assert -3.5 < slope < -1.5, slope
    few = build("dead_leaves", count=3).load()
    assert torch.equal(few.images, data.images[:3])
    assert build("dead_leaves", count=3).load().content_hash() == few.content_hash()
    # occluding disks: many flat regions, so many pixels share their colour with a neighbour
    flat = (data.images[:, :, :, 1:] == data.images[:, :, :, :-1]).all(1).float().mean()
    assert flat > 0.5
    assert build("dead_leaves", count=2, channels=1, resolution=16).load().images.shape == (2, 1, 16, 16)
    user_error(build("dead_leaves", rmin=0.5, rmax=0.2).load, "rmin")


def test_procedural_texture():
    data = build("procedural_texture", count=6).load()
    assert data.images.shape == (6, 3, 32, 32) and data.labels is None
    assert len({img.numpy().tobytes() for img in data.images}) == 6
    assert build("procedural_texture", count=6).load().content_hash() == data.content_hash()
    assert torch.equal(build("procedural_texture", count=2).load().images, data.images[:2])
    assert build("procedural_texture", count=2, channels=1).load().images.shape == (2, 1, 32, 32)
