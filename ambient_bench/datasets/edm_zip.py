"""Datasets packed the EDM / StyleGAN way: one zip of images, optional dataset.json with labels."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ambient_bench.components import Dataset, ImageReader, ImageSet
from ambient_bench.datasets import manifest
from ambient_bench.datasets._paths import EXTENSIONS_TEXT, first, is_image_name, limit_param, prepare, user_path
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import register_dataset

EDM_URL = "https://github.com/NVlabs/edm"


def _labels(archive: zipfile.ZipFile, names: list[str], path: Path) -> torch.Tensor | None:
    """Integer labels from dataset.json ({"labels": [[name, label], ...]} or null), in ``names`` order."""
    if "dataset.json" not in archive.namelist():
        return None
    try:
        entries = json.loads(archive.read("dataset.json")).get("labels")
    except (ValueError, AttributeError) as err:
        raise UserError(f"edm_zip: dataset.json in {path} is not a JSON object ({err})") from None
    if entries is None:
        return None
    # Windows-made zips may say "a\\b.png"; names inside the zip always use "/".
    by_name = {str(name).replace("\\", "/"): label for name, label in entries}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise UserError(f"edm_zip: dataset.json in {path} has no label for {missing[0]} "
                        f"({len(missing)} images unlabelled)")
    labels = [by_name[n] for n in names]
    bad = [lab for lab in labels if isinstance(lab, bool) or not isinstance(lab, int)]
    if bad:
        raise UserError(f"edm_zip: dataset.json in {path} has a non-integer label {bad[0]!r}; "
                        f"only integer class labels are supported")
    return torch.tensor(labels, dtype=torch.int64)


@register_dataset("edm_zip")
class EDMZip(Dataset):
    """An EDM/StyleGAN dataset zip (as written by EDM's dataset_tool.py): images, optional labels.

    Image files inside (png/jpg/jpeg/webp/bmp) are read in sorted name order; labels come from
    ``dataset.json`` ({"labels": [[name, int], ...]}, or null for none). `resolution: null`
    keeps the stored size, which all images must share; a number centre-crops and resizes with
    LANCZOS. Channels follow the data: 1 if every image is greyscale, else 3 (RGB). `limit: N`
    keeps the first N names (the others are not decoded).
    """

    version = 1
    needs_files = True
    params = {
        # where the zip lives is not what it holds: the key holds its sha256 (fingerprint())
        "path": Param(help="the .zip file (relative to the current directory; ~ allowed)", kind=str, semantic=False),
        "resolution": Param(None, "output size (square); null = as stored", kind=int, ge=8, nullable=True),
        "limit": limit_param(),
    }
    test_params = {"path": "edm-test.zip"}

    def check(self) -> None:
        path = user_path(self.p.path)
        if not path.is_file():
            raise UserError(f"edm_zip: expected {path} (a dataset zip made by dataset_tool.py of "
                            f"{EDM_URL}); fix path: or create it with dataset_tool.py")

    def _open(self) -> zipfile.ZipFile:
        self.check()
        path = user_path(self.p.path)
        try:
            return zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise UserError(f"edm_zip: {path} is not a zip file") from None

    def _names(self, archive: zipfile.ZipFile) -> list[str]:
        """The image names that load() reads, in its order (limit applied)."""
        # Same file rule as folders (extension, no dot files); "/"-separated names sort alike everywhere.
        names = sorted(n for n in archive.namelist() if is_image_name(n.rsplit("/", 1)[-1]))
        if not names:
            raise UserError(f"edm_zip: no images ({EXTENSIONS_TEXT}) in {user_path(self.p.path)}")
        return first(names, self.p.limit)

    def count(self) -> int | None:
        with self._open() as archive:  # reads the zip's directory only
            return len(self._names(archive))

    def fingerprint(self) -> dict[str, Any]:
        self.check()
        path = user_path(self.p.path)
        return {"content": manifest.file_hashes(path.parent, [path])[0][:16]}

    def reader(self) -> "ZipImages":
        """Image headers only are read here (mode and size, for load()'s channel and size rules)."""
        path = user_path(self.p.path)
        with self._open() as archive:
            names = self._names(archive)
            labels = _labels(archive, names, path)
            headers = []
            for name in names:
                with archive.open(name) as member, Image.open(member) as picture:
                    headers.append((picture.mode, picture.size))
        channels = 1 if all(mode in ("L", "1") for mode, _ in headers) else 3
        sizes = {size for _, size in headers}
        if self.p.resolution is None and len(sizes) > 1:
            (w1, h1), (w2, h2) = sorted(sizes)[:2]
            raise UserError(f"edm_zip: images in {path} have different sizes ({w1}×{h1}, {w2}×{h2}, ...); "
                            f"set resolution: to resize them")
        side = self.p.resolution or next(iter(sizes))[0]
        return ZipImages(path, names, self.p.resolution, channels, (channels, side, side), labels)

    def load(self) -> ImageSet:
        path = user_path(self.p.path)
        with self._open() as archive:
            names = self._names(archive)
            pictures = [Image.open(io.BytesIO(archive.read(n))) for n in names]
            labels = _labels(archive, names, path)
        channels = 1 if all(p.mode in ("L", "1") for p in pictures) else 3
        if self.p.resolution is None:
            sizes = {p.size for p in pictures}
            if len(sizes) > 1:
                (w1, h1), (w2, h2) = sorted(sizes)[:2]
                raise UserError(f"edm_zip: images in {path} have different sizes ({w1}×{h1}, {w2}×{h2}, ...); "
                                f"set resolution: to resize them")
        images = np.stack([prepare(p, self.p.resolution, channels) for p in pictures])
        return ImageSet(images=torch.from_numpy(images), labels=labels)


class ZipImages(ImageReader):
    """Members of a dataset zip, decoded one at a time; each process opens the zip for itself."""

    def __init__(self, path: Path, names: list[str], resolution: int | None, channels: int,
                 shape: tuple[int, int, int], labels: torch.Tensor | None) -> None:
        self.path, self.names, self.resolution, self.channels = path, names, resolution, channels
        self.shape, self.labels = shape, labels
        self._archive: zipfile.ZipFile | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_archive": None}  # an open zip does not cross into a worker

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._archive is None:
            self._archive = zipfile.ZipFile(self.path)
        picture = Image.open(io.BytesIO(self._archive.read(self.names[i])))
        return torch.from_numpy(np.array(prepare(picture, self.resolution, self.channels)))  # writable
