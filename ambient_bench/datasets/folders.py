"""Datasets read from folders of image files: any folder, AFHQv2, FFHQ, and the user's own data.

All of them list images recursively, sort them by relative path, centre-crop them to a square
and resize them with LANCZOS (see ``ambient_bench.datasets._paths`` for why).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ambient_bench.components import (HIGH_QUALITY, LOW_QUALITY, OUT_OF_DISTRIBUTION, Dataset,
                                      ImageSet)
from ambient_bench.datasets import manifest
from ambient_bench.datasets.readable import require_files, require_readable
from ambient_bench.datasets._paths import (FileImages, first, limit_param, list_images, load_images,
                                           require_images, root_or_default, standin_fingerprint, user_path)
from ambient_bench.errors import UserError
from ambient_bench.params import REQUIRED, Param
from ambient_bench.registry import register_dataset

AFHQ_URL = "https://github.com/clovaai/stargan-v2"
FFHQ_URL = "https://github.com/NVlabs/ffhq-dataset"


def _resolution(default: Any = REQUIRED) -> Param:
    return Param(default, "output size in pixels (square; centre-crop, then LANCZOS)", kind=int, ge=8)


def _channels() -> Param:
    return Param(3, "3 = RGB, 1 = greyscale (PIL 'L')", kind=int, choices=(1, 3))


def _root() -> Param:
    # Where the files are, not what they are: moving the data does not change results.
    return Param(None, "folder holding the datasets; null = $AMBIENT_BENCH_DATA or "
                 "~/.cache/ambient_bench/datasets", kind=str, nullable=True, semantic=False)


def subfolder_names(folder: Path, paths: list[Path], what: str) -> list[str]:
    """The first-level subfolder of every image (the class name); every image must have one."""
    parts = [p.relative_to(folder).parts for p in paths]
    loose = [p for p, part in zip(paths, parts) if len(part) == 1]
    if loose:
        raise UserError(f"{what}: labels_from_subfolders needs every image inside a subfolder of {folder}, "
                        f"but {loose[0]} is not")
    return [part[0] for part in parts]


def class_labels(names: list[str]) -> torch.Tensor:
    """Label = index of the class name among all names, sorted."""
    classes = sorted(set(names))
    return torch.tensor([classes.index(name) for name in names], dtype=torch.int64)


@register_dataset("image_folder")
class ImageFolder(Dataset):
    """Any folder of images (png/jpg/jpeg/webp/bmp, any depth), sorted by relative path.

    Each image is centre-cropped to a square and resized to `resolution` with LANCZOS. With
    `labels_from_subfolders`, every image must sit inside a first-level subfolder; the label is
    that subfolder's index among them in sorted order (among the subfolders of the images
    kept by `limit`, which keeps the first N images in that order).
    """

    version = 1
    needs_files = True
    params = {
        # where the images live is not what they are: the key holds their content (fingerprint())
        "path": Param(help="the folder (relative to the current directory; ~ allowed)", kind=str, semantic=False),
        "resolution": _resolution(),
        "channels": _channels(),
        "labels_from_subfolders": Param(False, "label = index of the first-level subfolder", kind=bool),
        "limit": limit_param(),
    }
    test_params = {"path": "image-folder-test", "resolution": 16}

    def check(self) -> None:
        folder = user_path(self.p.path)
        require_images(folder, "image_folder", "a folder of images", "fix path:")

    def _paths(self) -> list[Path]:
        self.check()
        return first(list_images(user_path(self.p.path)), self.p.limit)

    def count(self) -> int | None:
        return len(self._paths())

    def fingerprint(self) -> dict[str, Any]:
        folder, paths = user_path(self.p.path), self._paths()
        require_files(paths, "image_folder")
        content = manifest.fingerprint(folder, paths)
        require_readable(folder, paths, "image_folder")  # with the manifest pass: before any stage runs
        return {"content": content}

    def load(self) -> ImageSet:
        folder = user_path(self.p.path)
        paths = self._paths()
        labels = class_labels(subfolder_names(folder, paths, "image_folder")) if self.p.labels_from_subfolders else None
        return ImageSet(images=load_images(paths, self.p.resolution, self.p.channels), labels=labels)

    def reader(self) -> FileImages:
        paths = self._paths()
        labels = (class_labels(subfolder_names(user_path(self.p.path), paths, "image_folder"))
                  if self.p.labels_from_subfolders else None)
        return FileImages(paths, self.p.resolution, self.p.channels, labels)


# Real sizes, for plan's estimate on stand-ins: the paper's App. E ("AFHQ consists of 5,653 images of
# cats, 5,239 images of dogs and 5,000 images of wildlife"; the release's dog folder has 5,239 images,
# notes §7.1); FFHQ has 70,000 images (github.com/NVlabs/ffhq-dataset).
AFHQ_PAPER_SIZES = {"cat": 5_653, "dog": 5_239, "wild": 5_000}
FFHQ_SIZE = 70_000


@register_dataset("afhq")
class AFHQ(Dataset):
    """AFHQv2 (cats, dogs or wild animals), the paper's AFHQ experiments; 64×64 by default.

    Expects ``<root>/afhq/<split>/<animal>/*.png`` (AFHQv2 from
    https://github.com/clovaai/stargan-v2, `bash download.sh afhq-v2-dataset`, unzipped so that
    e.g. <root>/afhq/train/cat/ holds the PNGs). `split: all` is the whole class, as the
    paper's AFHQ folders hold it: the train images, then the test images (each sorted by
    relative path); it needs both folders. The 512×512 images are resized with LANCZOS, as
    EDM's dataset_tool does. `limit: N` keeps the first N images of that order. No labels
    (one animal per dataset).
    """

    version = 1
    needs_files = True
    params = {
        "root": _root(),
        "animal": Param("cat", "which class", kind=str, choices=("cat", "dog", "wild")),
        "split": Param("train", "which split; all = train, then test", kind=str,
                       choices=("train", "test", "all")),
        "resolution": _resolution(64),
        "limit": limit_param(),
    }
    test_params = {"root": "afhq-test-root", "resolution": 16}

    def _root(self) -> Path:
        return root_or_default(self.p.root)

    def _folders(self) -> list[tuple[str, Path]]:
        """(split, folder) in load order."""
        splits = ("train", "test") if self.p.split == "all" else (self.p.split,)
        return [(split, self._root() / "afhq" / split / self.p.animal) for split in splits]

    def check(self) -> None:
        for split, folder in self._folders():
            require_images(folder, "afhq", f"AFHQv2 {split} {self.p.animal} images",
                           f"download AFHQv2 from {AFHQ_URL} (bash download.sh afhq-v2-dataset) and unzip it "
                           f"so that {folder} holds the PNGs, or set root: to where afhq/ is")

    def _paths(self) -> list[Path]:
        self.check()
        return first([path for _, folder in self._folders() for path in list_images(folder)], self.p.limit)

    def count(self) -> int | None:
        return len(self._paths())

    def nominal_count(self) -> int | None:
        if self.p.split != "all":  # the per-split sizes of AFHQv2 are not stated in the paper
            return None
        total = AFHQ_PAPER_SIZES[self.p.animal]
        return total if self.p.limit is None else min(total, self.p.limit)

    def fingerprint(self) -> dict[str, Any]:
        return standin_fingerprint(self._root())

    def load(self) -> ImageSet:
        return ImageSet(images=load_images(self._paths(), self.p.resolution, 3))

    def reader(self) -> FileImages:
        return FileImages(self._paths(), self.p.resolution, 3)


@register_dataset("ffhq")
class FFHQ(Dataset):
    """FFHQ faces, the paper's FFHQ experiments; 64×64 by default.

    Expects the FFHQ PNGs anywhere below ``<root>/ffhq/`` (from
    https://github.com/NVlabs/ffhq-dataset; the thumbnails128x128 folder is enough for 64×64).
    Put one version only there: thumbnails and 1024×1024 images together would count twice.
    Images are resized with LANCZOS (EDM resizes the 1024×1024 ones the same way). `limit: N`
    keeps the first N images by relative path.
    """

    version = 1
    needs_files = True
    params = {"root": _root(), "resolution": _resolution(64), "limit": limit_param()}
    test_params = {"root": "ffhq-test-root", "resolution": 16}

    def _folder(self) -> Path:
        return root_or_default(self.p.root) / "ffhq"

    def check(self) -> None:
        folder = self._folder()
        require_images(folder, "ffhq", "a folder of FFHQ PNGs, any depth",
                       f"download the thumbnails128x128 folder (enough for 64×64) from {FFHQ_URL} "
                       f"and put it inside {folder}, or set root: to where ffhq/ is")

    def _paths(self) -> list[Path]:
        self.check()
        return first(list_images(self._folder()), self.p.limit)

    def count(self) -> int | None:
        return len(self._paths())

    def nominal_count(self) -> int | None:
        return FFHQ_SIZE if self.p.limit is None else min(FFHQ_SIZE, self.p.limit)

    def fingerprint(self) -> dict[str, Any]:
        return standin_fingerprint(root_or_default(self.p.root))

    def load(self) -> ImageSet:
        return ImageSet(images=load_images(self._paths(), self.p.resolution, 3))

    def reader(self) -> FileImages:
        return FileImages(self._paths(), self.p.resolution, 3)


@register_dataset("user_folders")
class UserFolders(Dataset):
    """Your own data, the paper's real-world setting: good images plus bad ones of unknown kind.

    `high_quality` is a folder of images you trust; each `low_quality` folder holds images that
    are degraded in some way nobody has to name; each `out_of_distribution` folder holds images
    of other content. Every image gets its `source` (HIGH_QUALITY, LOW_QUALITY,
    OUT_OF_DISTRIBUTION); the order is the high-quality folder, then each low-quality folder,
    then each out-of-distribution folder, each sorted by relative path. Centre-crop + LANCZOS.
    With `labels_from_subfolders`, class labels come from the first-level subfolders of every
    folder (one class list across all of them).
    """

    version = 1
    needs_files = True
    provides_sources = True
    params = {
        # folders are where, not what: the key holds their content (fingerprint())
        "high_quality": Param(help="folder of good images", kind=str, semantic=False),
        "low_quality": Param(help="folders of low-quality images", kind=list, item=str, semantic=False),
        "out_of_distribution": Param([], "folders of out-of-distribution images", kind=list, item=str,
                                     semantic=False),
        "resolution": _resolution(),
        "channels": _channels(),
        "labels_from_subfolders": Param(False, "label = name of the first-level subfolder", kind=bool),
    }
    test_params = {"high_quality": "good", "low_quality": ["bad"], "resolution": 16}

    def _groups(self) -> list[tuple[str, Path, int]]:
        """(config key, folder, source) in load order."""
        groups = [("high_quality", user_path(self.p.high_quality), HIGH_QUALITY)]
        groups += [(f"low_quality[{i}]", user_path(p), LOW_QUALITY) for i, p in enumerate(self.p.low_quality)]
        groups += [(f"out_of_distribution[{i}]", user_path(p), OUT_OF_DISTRIBUTION)
                   for i, p in enumerate(self.p.out_of_distribution)]
        return groups

    def check(self) -> None:
        for key, folder, _ in self._groups():
            require_images(folder, f"user_folders: {key}", "a folder of images", f"fix {key}:")

    def count(self) -> int | None:
        self.check()
        return sum(len(list_images(folder)) for _, folder, _ in self._groups())

    def folder_counts(self) -> str:
        """'40 good, 120 bad, 0 out-of-distribution images' (for the tables' footnotes)."""
        self.check()
        count = {HIGH_QUALITY: 0, LOW_QUALITY: 0, OUT_OF_DISTRIBUTION: 0}
        for _, folder, source in self._groups():
            count[source] += len(list_images(folder))
        return (f"{count[HIGH_QUALITY]:,} good, {count[LOW_QUALITY]:,} bad, {count[OUT_OF_DISTRIBUTION]:,} "
                f"out-of-distribution images")

    def reference_count(self) -> int:
        """The images metrics score as the reference: the high-quality folder (ImageSet.high_quality)."""
        self.check()
        return len(list_images(self._groups()[0][1]))

    def fingerprint(self) -> dict[str, Any]:
        self.check()
        content = []
        for key, folder, source in self._groups():
            paths = list_images(folder)
            require_files(paths, f"user_folders: {key}")
            content.append([key, source, manifest.fingerprint(folder, paths)])
            require_readable(folder, paths, f"user_folders: {key}")  # with the manifest pass, before any stage
        return {"content": content}

    def reader(self) -> FileImages:
        self.check()
        paths, sources, names = [], [], []
        for key, folder, source in self._groups():
            listed = list_images(folder)
            paths += listed
            sources.append(torch.full((len(listed),), source, dtype=torch.int8))
            if self.p.labels_from_subfolders:
                names += subfolder_names(folder, listed, f"user_folders: {key}")
        labels = class_labels(names) if self.p.labels_from_subfolders else None
        return FileImages(paths, self.p.resolution, self.p.channels, labels, torch.cat(sources))

    def load(self) -> ImageSet:
        self.check()
        images, sources, names = [], [], []
        for key, folder, source in self._groups():
            paths = list_images(folder)
            images.append(load_images(paths, self.p.resolution, self.p.channels))
            sources.append(torch.full((len(paths),), source, dtype=torch.int8))
            if self.p.labels_from_subfolders:
                names += subfolder_names(folder, paths, f"user_folders: {key}")
        labels = class_labels(names) if self.p.labels_from_subfolders else None
        return ImageSet(images=torch.cat(images), labels=labels, source=torch.cat(sources))
