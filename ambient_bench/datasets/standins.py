"""Synthetic stand-ins for CIFAR-10, FFHQ, AFHQv2 and ImageNet, written in the real datasets' file formats.

Tests and ``--profile tiny`` runs use them to go through the real loaders (cifar10, ffhq, afhq, imagenet)
where the real data is not at hand. The pictures are procedural: a two-colour gradient with a
few ellipses and rectangles on it (FFHQ: plus a centred "face"). Each class, animal and dataset
has its own palette hue and shape scale, so a classifier can tell them apart; every image comes
from its own named generator, so the same arguments give byte-identical files.

The data root gets ``STANDIN_MARKER``: its hash is the ``fingerprint()`` of the datasets read
from that root, so results on stand-ins never share a stage key with results on real data.

Not a registered dataset. The registry imports every module of this package when it looks for
datasets, so this one registers nothing and imports nothing heavy.
"""
from __future__ import annotations

import colorsys
import math
import os
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from ambient_bench.datasets._paths import STANDIN_MARKER
from ambient_bench.errors import UserError
from ambient_bench.seeding import numpy_rng

# Bump when the pictures or the layout change: it is part of the marker text, hence of the
# fingerprint, so stages computed on older stand-ins are not reused for new ones.
FORMAT = 2
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ANIMALS = ("cat", "dog", "wild")
PHOTO_SIZE = 128  # FFHQ thumbnails are 128×128; AFHQ's 512×512 would only make tests slower
# The folders write_standins owns below its root (replaced when it writes again).
OWNED = ("cifar-10-batches-py", "ffhq", "afhq", "imagenet")
# the first four ILSVRC-2012 classes (tench, goldfish, great white shark, tiger shark)
IMAGENET_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")


class Style(NamedTuple):
    """What sets a class apart: the palette's hue (0..1 around the colour wheel) and the
    typical shape radius (fraction of the image side)."""

    hue: float
    scale: float
    portrait: bool = False  # a centred face-like ellipse with eyes and mouth on top


CIFAR_STYLES = tuple(Style(hue=c / 10, scale=0.08 + 0.025 * c) for c in range(10))
ANIMAL_STYLES = {"cat": Style(0.08, 0.30), "dog": Style(0.58, 0.18), "wild": Style(0.30, 0.10)}
FFHQ_STYLE = Style(0.95, 0.12, portrait=True)


def _colour(rng: np.random.Generator, hue: float) -> np.ndarray:
    """An RGB colour (floats in [0, 1]) near ``hue``, of random saturation and brightness."""
    h = (hue + rng.uniform(-0.04, 0.04)) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.4, 0.9), rng.uniform(0.3, 1.0)))


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _draw_face(image: np.ndarray, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, hue: float) -> None:
    cx, cy = 0.5 + rng.uniform(-0.04, 0.04), 0.55 + rng.uniform(-0.04, 0.04)
    image[_ellipse(x, y, cx, cy, 0.28 * rng.uniform(0.9, 1.1), 0.36 * rng.uniform(0.9, 1.1))] = _colour(rng, hue)
    dark = rng.uniform(0.0, 0.2, 3)
    for side in (-1, 1):
        image[_ellipse(x, y, cx + side * 0.1, cy - 0.08, 0.035, 0.025)] = dark
    image[(np.abs(x - cx) <= 0.08) & (np.abs(y - cy - 0.16) <= 0.015)] = dark


def picture(rng: np.random.Generator, size: int, style: Style) -> np.ndarray:
    """One stand-in image, uint8 H×W×3: the scene lives in [0, 1]², sampled at pixel centres."""
    centres = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(centres, centres, indexing="ij")
    start, end = _colour(rng, style.hue), _colour(rng, style.hue)
    angle = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle), 0.0, 1.0)
    image = start + t[..., None] * (end - start)
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.random(2)
        rx, ry = style.scale * np.exp(rng.normal(0.0, 0.25, 2))
        colour = _colour(rng, style.hue)
        if rng.random() < 0.5:
            image[_ellipse(x, y, cx, cy, rx, ry)] = colour
        else:
            image[(np.abs(x - cx) <= rx) & (np.abs(y - cy) <= ry)] = colour
    if style.portrait:
        _draw_face(image, x, y, rng, style.hue)
    # a little grain, so that no region is perfectly flat (real photos never are)
    image += 0.015 * rng.standard_normal(image.shape)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


class PngJob(NamedTuple):
    """One PNG to write: where, from which generator (its name parts), in which style."""

    path: Path
    rng_parts: tuple[int | str, ...]
    style: Style


def _write_png(job: PngJob) -> None:
    image = picture(numpy_rng(*job.rng_parts), PHOTO_SIZE, job.style)
    if job.path.suffix == ".JPEG":  # ImageNet: JPEG files, landscape (4:3) as most of its photos
        Image.fromarray(image[16:-16]).save(job.path, format="JPEG", quality=90)
        return
    # PIL adds no timestamp or other metadata: same pixels, same bytes. Level 1: the grain hardly
    # compresses anyway, and the default level 6 spends more time for little.
    Image.fromarray(image).save(job.path, format="PNG", compress_level=1)


def _write_pngs(jobs: list[PngJob]) -> None:
    """Threads help: zlib and most of numpy run without the GIL; every image has its own generator."""
    for folder in sorted({job.path.parent for job in jobs}):
        folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(_write_png, jobs))  # list(): re-raise the first error


def _cifar_batch(seed: int, name: str, label: str, per_class: int) -> dict[bytes, object]:
    """One batch dict as in the official files: every class ``per_class`` times, shuffled."""
    classes = numpy_rng("standins", seed, "cifar10", name, "order").permutation(np.repeat(np.arange(10), per_class))
    rows, filenames = [], []
    for j, c in enumerate(classes.tolist()):
        image = picture(numpy_rng("standins", seed, "cifar10", name, j), 32, CIFAR_STYLES[c])
        rows.append(image.transpose(2, 0, 1).reshape(-1))  # the R, G, B planes one after the other
        filenames.append(f"{CIFAR_CLASSES[c]}_standin_{name}_{j:06d}.png".encode())
    return {b"batch_label": label.encode(), b"labels": classes.tolist(), b"data": np.stack(rows),
            b"filenames": filenames}


def _write_pickle(path: Path, value: dict[bytes, object]) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=4)  # a fixed protocol: the bytes must not change with Python


def write_cifar10(root: Path, per_class: int, seed: int) -> tuple[int, int]:
    """``root/cifar-10-batches-py/`` (five train batches, test_batch, batches.meta); (train, test) sizes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        name = f"data_batch_{i}"
        _write_pickle(folder / name, _cifar_batch(seed, name, f"training batch {i} of 5", per_class))
    _write_pickle(folder / "test_batch", _cifar_batch(seed, "test_batch", "testing batch 1 of 1", per_class))
    _write_pickle(folder / "batches.meta", {b"num_cases_per_batch": 10 * per_class,
                                            b"label_names": [n.encode() for n in CIFAR_CLASSES],
                                            b"num_vis": 3072})
    return 50 * per_class, 10 * per_class


def ffhq_jobs(root: Path, count: int, seed: int) -> list[PngJob]:
    """``root/ffhq/thumbnails128x128/<00000, 01000, ...>/<index:05d>.png``, as the official thumbnails."""
    folder = root / "ffhq" / "thumbnails128x128"
    return [PngJob(folder / f"{i // 1000 * 1000:05d}" / f"{i:05d}.png", ("standins", seed, "ffhq", i), FFHQ_STYLE)
            for i in range(count)]


def afhq_jobs(root: Path, animal: str, train: int, test: int, seed: int) -> list[PngJob]:
    """``root/afhq/{train,test}/<animal>/flickr_<animal>_<6 digits>.png``.

    Train images get even numbers and test images odd ones, so that 'train, then test' differs
    from sorting all names together (as it does in the real AFHQv2).
    """
    return [PngJob(root / "afhq" / split / animal / f"flickr_{animal}_{2 * j + parity:06d}.png",
                   ("standins", seed, "afhq", animal, split, j), ANIMAL_STYLES[animal])
            for split, n, parity in (("train", train, 0), ("test", test, 1)) for j in range(n)]


def imagenet_jobs(root: Path, train: int, val: int, seed: int) -> list[PngJob]:
    """``root/imagenet/{train,val}/<wnid>/<wnid>_<n>.JPEG`` (the class-folder layout), one hue per class."""
    return [PngJob(root / "imagenet" / split / wnid / f"{wnid}_{j}.JPEG", ("standins", seed, "imagenet", split, k, j),
                   CIFAR_STYLES[k])
            for split, n in (("train", train), ("val", val)) for k, wnid in enumerate(IMAGENET_WNIDS)
            for j in range(n)]


def marker_text(per_class: int, seed: int) -> str:
    return (f"Synthetic stand-in data written by ambient_bench (ambient_bench.datasets.standins).\n"
            f"These are NOT the real CIFAR-10, FFHQ, AFHQv2 or ImageNet datasets: procedural pictures in their file\n"
            f"formats, for tests and tiny runs. Results on them say nothing about any method.\n"
            f"format: {FORMAT}\nper_class: {per_class}\nseed: {seed}\n")


def _claim(root: Path) -> None:
    """Refuse a folder that may hold real data; clear what an earlier write left behind."""
    if root.exists() and not root.is_dir():
        raise UserError(f"standins: {root} is a file; give a folder (empty or new) for the stand-in data")
    if root.is_dir() and any(root.iterdir()) and not (root / STANDIN_MARKER).is_file():
        raise UserError(f"standins: {root} is not empty and holds no {STANDIN_MARKER}, so it may hold real data; "
                        f"write the stand-ins into an empty or new folder")
    for name in OWNED:  # a smaller per_class must not leave extra images of a larger one behind
        if (root / name).exists():
            shutil.rmtree(root / name)


def write_standins(root: Path, per_class: int = 24, seed: int = 0) -> dict[str, int]:
    """Write synthetic CIFAR-10, FFHQ and AFHQv2 files into ``root``; return image counts.

    CIFAR-10: five train batches and a test batch of ``per_class`` images of every class each.
    ImageNet: four classes, ``per_class // 2`` train and ``per_class // 12`` val JPEGs each (at least 1).
    FFHQ: ``10 * per_class`` thumbnails. AFHQv2: ``2 * per_class`` train and ``per_class // 2``
    (at least 1) test images per animal, 128×128. Keys: cifar10, cifar10_test, ffhq,
    afhq_<animal> (train) and afhq_<animal>_test. Writing over earlier stand-ins (a folder with
    the marker) deletes its cifar-10-batches-py/, ffhq/ and afhq/ first; a non-empty folder
    without the marker is refused (it may hold the user's real data).
    """
    root = Path(root)
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise UserError(f"standins: per_class must be an integer ≥ 1, got {per_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"standins: seed must be an integer ≥ 0, got {seed!r}")
    _claim(root)
    root.mkdir(parents=True, exist_ok=True)
    # the marker first: an interrupted write can then be redone over the same folder
    (root / STANDIN_MARKER).write_text(marker_text(per_class, seed), encoding="utf-8")
    counts: dict[str, int] = {}
    counts["cifar10"], counts["cifar10_test"] = write_cifar10(root, per_class, seed)
    jobs = ffhq_jobs(root, 10 * per_class, seed)
    counts["ffhq"] = 10 * per_class
    train, test = 2 * per_class, max(1, per_class // 2)
    for animal in ANIMALS:
        jobs += afhq_jobs(root, animal, train, test, seed)
        counts[f"afhq_{animal}"], counts[f"afhq_{animal}_test"] = train, test
    jobs += imagenet_jobs(root, max(1, per_class // 2), max(1, per_class // 12), seed)
    counts["imagenet"] = len(IMAGENET_WNIDS) * max(1, per_class // 2)
    counts["imagenet_val"] = len(IMAGENET_WNIDS) * max(1, per_class // 12)
    _write_pngs(jobs)
    return counts
