"""ImageNet (ILSVRC-2012) from its class folders, prepared the way EDM2's dataset tool makes img512.

Expects ``<root>/imagenet/<split>/<wnid>/*.JPEG``: the train archive extracted per class, and the
validation images moved into class folders (the common ``valprep.sh`` layout). Labels are the
positions of the sorted wnid folders (0..999, the standard order). EDM2's own ``img512.zip`` reads
through the ``edm_zip`` dataset instead (its labels are in dataset.json).

Resize (EDM2's ``center-crop-dhariwal``, from ADM): halve with a box filter while the short side is
at least twice the target, scale the short side to the target with bicubic, then crop the centre.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ambient_bench.components import Dataset, ImageReader, ImageSet
from ambient_bench.datasets._paths import (first, limit_param, list_images, require_images, root_or_default,
                                           standin_fingerprint)
from ambient_bench.datasets.folders import subfolder_names
from ambient_bench.params import Param
from ambient_bench.registry import register_dataset

IMAGENET_URL = "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"


def center_crop_dhariwal(picture: Image.Image, resolution: int) -> np.ndarray:
    """uint8 3×R×R: box-halve while the short side ≥ 2R, bicubic to short side R, centre crop."""
    picture = picture.convert("RGB")
    while min(picture.size) >= 2 * resolution:
        picture = picture.resize(tuple(x // 2 for x in picture.size), resample=Image.BOX)
    scale = resolution / min(picture.size)
    picture = picture.resize(tuple(round(x * scale) for x in picture.size), resample=Image.BICUBIC)
    array = np.asarray(picture, dtype=np.uint8)
    top, left = (array.shape[0] - resolution) // 2, (array.shape[1] - resolution) // 2
    return array[top:top + resolution, left:left + resolution].transpose(2, 0, 1)


def _load(path: Path, resolution: int) -> np.ndarray:
    with Image.open(path) as picture:
        return center_crop_dhariwal(ImageOps.exif_transpose(picture), resolution)


class DhariwalImages(ImageReader):
    """The files read one at a time (a pool too large for memory streams through this)."""

    def __init__(self, paths: Sequence[Path], resolution: int, labels: torch.Tensor | None) -> None:
        self.paths, self.resolution = list(paths), resolution
        self.shape, self.labels, self.source = (3, resolution, resolution), labels, None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(_load(self.paths[i], self.resolution)))


# ILSVRC-2012 as released (image-net.org): 1,281,167 train images, 50,000 val images
OFFICIAL_SIZES = {"train": 1_281_167, "val": 50_000}


@register_dataset("imagenet")
class ImageNet(Dataset):
    """ImageNet ILSVRC-2012 class folders (train or val), labelled 0..999, EDM2's centre crop; 512 px by default."""

    version = 1
    needs_files = True
    params = {
        "root": Param(None, "folder holding imagenet/; null = $AMBIENT_BENCH_DATA or ~/.cache/ambient_bench/datasets",
                      kind=str, nullable=True, semantic=False),
        "split": Param("train", "train (the paper's training set and Train-FID reference) or val (Test FID)",
                       kind=str, choices=("train", "val")),
        "resolution": Param(512, "output size (EDM2's center-crop-dhariwal)", kind=int, ge=8),
        "limit": limit_param(),
    }
    test_params = {"root": "imagenet-test-root", "resolution": 16}

    def _folder(self) -> Path:
        return root_or_default(self.p.root) / "imagenet" / self.p.split

    def check(self) -> None:
        folder = self._folder()
        require_images(folder, "imagenet", f"ILSVRC-2012 {self.p.split} images in class folders <wnid>/",
                       f"download ILSVRC2012_img_{self.p.split}.tar from {IMAGENET_URL} and extract it so that "
                       f"{folder}/n01440764/ holds JPEGs (val: move the images into class folders, valprep.sh), "
                       f"or set root: to where imagenet/ is")

    def _paths_and_labels(self) -> tuple[list[Path], torch.Tensor]:
        self.check()
        folder = self._folder()
        paths = list_images(folder)
        names = subfolder_names(folder, paths, "imagenet")
        position = {wnid: k for k, wnid in enumerate(sorted(set(names)))}  # the standard 0..999 order
        labels = torch.tensor([position[name] for name in names], dtype=torch.int64)
        kept = first(list(range(len(paths))), self.p.limit)
        return [paths[i] for i in kept], labels[kept]

    def count(self) -> int | None:
        return len(self._paths_and_labels()[0])

    def nominal_count(self) -> int | None:
        total = OFFICIAL_SIZES[self.p.split]
        return total if self.p.limit is None else min(total, self.p.limit)

    def fingerprint(self) -> dict[str, Any]:
        return standin_fingerprint(root_or_default(self.p.root))

    def load(self) -> ImageSet:
        paths, labels = self._paths_and_labels()
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            arrays = list(pool.map(lambda p: _load(p, self.p.resolution), paths))
        images = torch.from_numpy(np.stack(arrays)) if arrays else \
            torch.zeros((0, 3, self.p.resolution, self.p.resolution), dtype=torch.uint8)
        return ImageSet(images=images, labels=labels)

    def reader(self) -> DhariwalImages:
        paths, labels = self._paths_and_labels()
        return DhariwalImages(paths, self.p.resolution, labels)
