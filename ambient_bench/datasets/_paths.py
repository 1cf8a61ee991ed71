"""Shared helpers of the file-based datasets: where data lives, finding and loading images.

Resize policy (every file-based dataset): centre-crop to a square (the largest one, offset
rounded down), then resize to ``resolution`` × ``resolution`` with PIL's LANCZOS filter. This is
the "center-crop" transform of EDM's ``dataset_tool.py``, which prepared the AFHQv2 and FFHQ
64×64 sets the paper trains on, so our pixels match theirs; LANCZOS is also properly
anti-aliased when shrinking (no moiré from 512 → 64). Images already at the target size are not
touched. Alpha is dropped (PIL's ``convert("RGB")``); greyscale is PIL's ``convert("L")``.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps

from ambient_bench.components import ImageReader
from ambient_bench.errors import UserError
from ambient_bench.params import Param

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
EXTENSIONS_TEXT = "/".join(e[1:] for e in IMAGE_EXTENSIONS)
# Written by ``ambient_bench.datasets.standins`` into a data root of synthetic stand-in files.
STANDIN_MARKER = "AMBIENT_BENCH_STANDIN.txt"

T = TypeVar("T")


def data_root() -> Path:
    """Default folder of the paper's datasets: $AMBIENT_BENCH_DATA, else ~/.cache/ambient_bench/datasets."""
    env = os.environ.get("AMBIENT_BENCH_DATA")
    return user_path(env) if env else Path.home() / ".cache" / "ambient_bench" / "datasets"


def user_path(text: str) -> Path:
    """A path given in a config: ``~`` expanded, relative to the current directory, made absolute
    (so that error messages name the exact place we looked)."""
    return Path(os.path.expanduser(text)).absolute()


def root_or_default(root: str | None) -> Path:
    return data_root() if root is None else user_path(root)


def standin_marker(root: Path) -> str | None:
    """First 16 hex digits of the sha256 of ``root/STANDIN_MARKER``, or None when there is none.

    The marker's text names the stand-in generator's format and parameters, so its hash
    tells stand-in sets apart from each other, and its presence tells them from real data.
    """
    marker = root / STANDIN_MARKER
    if not marker.is_file():
        return None
    return hashlib.sha256(marker.read_bytes()).hexdigest()[:16]


def standin_fingerprint(root: Path) -> dict[str, str]:
    """``Dataset.fingerprint()`` of a dataset read from ``root``: {} for real data."""
    marker = standin_marker(root)
    return {} if marker is None else {"standin": marker}


def limit_param() -> Param:
    # Semantic: the first N images are other data than all of them; left out of keys while null, so
    # results stored before the parameter existed keep their keys.
    return Param(None, "use only the first N images in the dataset's order (null = all)", kind=int, ge=1,
                 nullable=True, omit_default=True)


def first(items: list[T], limit: int | None) -> list[T]:
    """The first ``limit`` items (all of them for None)."""
    return items if limit is None else items[:limit]


def is_image_name(name: str) -> bool:
    # Dot files are skipped: macOS writes "._name.png" AppleDouble files next to real images.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _walk_images(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if is_image_name(name):
                yield Path(dirpath) / name


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` at any depth, sorted by their relative path (as text with '/',
    so the order is the same on every file system)."""
    return sorted(_walk_images(folder), key=lambda p: p.relative_to(folder).as_posix())


def require_images(folder: Path, prefix: str, expected: str, fix: str) -> None:
    """Cheap check that ``folder`` exists and holds at least one image (stops at the first).

    Raises a one-line ``UserError``: "<prefix>: expected <folder> (<expected>); <fix>" or
    "<prefix>: no images (png/jpg/...) under <folder>; <fix>".
    """
    if not folder.is_dir():
        raise UserError(f"{prefix}: expected {folder} ({expected}); {fix}")
    if next(_walk_images(folder), None) is None:
        raise UserError(f"{prefix}: no images ({EXTENSIONS_TEXT}) under {folder}; {fix}")


def prepare(picture: Image.Image, resolution: int | None, channels: int) -> np.ndarray:
    """A PIL image → uint8 C×H×W after the module's resize policy (None: keep the size)."""
    picture = picture.convert("RGB" if channels == 3 else "L")
    if resolution is not None:
        w, h = picture.size
        side = min(w, h)
        if (w, h) != (side, side):
            left, top = (w - side) // 2, (h - side) // 2
            picture = picture.crop((left, top, left + side, top + side))
        if side != resolution:
            picture = picture.resize((resolution, resolution), Image.LANCZOS)
    array = np.asarray(picture, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_image(path: Path, resolution: int | None, channels: int) -> np.ndarray:
    with Image.open(path) as picture:
        # Phone photos store their rotation as an EXIF tag; apply it so the image is upright.
        return prepare(ImageOps.exif_transpose(picture), resolution, channels)


def load_images(paths: Sequence[Path], resolution: int, channels: int) -> torch.Tensor:
    """uint8 N×C×H×W, in the order of ``paths``.

    Threads help because PIL decodes and resizes without holding the GIL; ``map`` keeps order.
    """
    if not paths:
        return torch.zeros((0, channels, resolution, resolution), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda p: load_image(p, resolution, channels), paths))
    return torch.from_numpy(np.stack(arrays))


class FileImages(ImageReader):
    """Image files read one at a time by ``load_image`` (what ``load_images`` does for all of them)."""

    def __init__(self, paths: Sequence[Path], resolution: int, channels: int, labels: torch.Tensor | None = None,
                 source: torch.Tensor | None = None) -> None:
        self.paths, self.resolution, self.channels = list(paths), resolution, channels
        self.shape, self.labels, self.source = (channels, resolution, resolution), labels, source

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(load_image(self.paths[i], self.resolution, self.channels)))  # writable
