"""Pools larger than memory: read image by image from the dataset's files, corrupted on the fly.

A dataset whose pixels (count × C × H × W bytes, uint8) exceed ``$AMBIENT_BENCH_IN_MEMORY_GB``
(default 8 GiB) and that has a ``reader()`` (folders, zips) is not loaded whole. Its mix stage
stores the pool's layout only (``mixing.layout``: which image each row is, coin, corruption);
``PoolImages`` then produces row j on demand, in DataLoader workers: the file decoded by the
dataset's reader, the row's corruption applied with its own generator (seed, index), and its
fixed noise Z_j drawn from (seed, index). Every corruption treats the images of a batch
independently, so a row comes out bit-identical to the in-memory pool's (tests/test_pool.py),
and results do not depend on how the data were loaded. The limit is not part of any stage key.
"""
from __future__ import annotations

import bisect
import math
import os
from typing import Any, Sequence

import torch

from ambient_bench.components import Corruption, ImageReader
from ambient_bench.data.mixing import PoolLayout, corrupt
from ambient_bench.errors import UserError
from ambient_bench.seeding import torch_generator

LIMIT_ENV = "AMBIENT_BENCH_IN_MEMORY_GB"
DEFAULT_LIMIT_GB = 8.0
LOADER_BATCH = 64  # images per DataLoader batch when a whole subset is read (annotation, classifiers)


def in_memory_limit_bytes() -> float:
    text = os.environ.get(LIMIT_ENV, str(DEFAULT_LIMIT_GB))
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"${LIMIT_ENV} is {text!r}; set it to a number of GiB (e.g. 8)") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"${LIMIT_ENV} is {text!r}; set it to a number of GiB ≥ 0")
    return value * 2 ** 30


def streams(readers: Sequence[ImageReader | None]) -> bool:
    """True when every source has a reader and their pixels together exceed the limit."""
    if any(r is None for r in readers):
        return False
    return sum(len(r) * math.prod(r.shape) for r in readers) > in_memory_limit_bytes()


def loader_workers() -> int:
    """DataLoader workers: ``$AMBIENT_BENCH_LOADER_WORKERS``, else up to 8 of this process's cores."""
    text = os.environ.get("AMBIENT_BENCH_LOADER_WORKERS")
    if text is not None:
        if not text.isdigit():
            raise UserError(f"$AMBIENT_BENCH_LOADER_WORKERS is {text!r}; set it to a whole number ≥ 0")
        return int(text)
    return min(8, max(0, (os.cpu_count() or 1) - 1))


class PoolImages(torch.utils.data.Dataset):
    """Row j of a streamed pool: (uint8 C×H×W image, float32 Z_j), exactly as ``mixing.mix`` makes it."""

    def __init__(self, readers: Sequence[ImageReader], corruptions: Sequence[Corruption], seed: int,
                 pool: PoolLayout, with_noise: bool = True) -> None:
        shapes = {tuple(r.shape) for r in readers}
        if len(shapes) > 1:
            raise UserError(f"the dataset and its out-of-distribution sources have different image shapes "
                            f"{sorted(shapes)}; set their resolution/channels")
        self.readers, self.corruptions, self.seed, self.pool = list(readers), list(corruptions), seed, pool
        self.offsets = [0]
        for r in self.readers:
            self.offsets.append(self.offsets[-1] + len(r))
        self.shape, self.with_noise = tuple(self.readers[0].shape), with_noise

    def __len__(self) -> int:
        return len(self.pool.rows)

    def image(self, j: int) -> torch.Tensor:
        index = int(self.pool.rows[j])
        k = bisect.bisect_right(self.offsets, index) - 1
        image = self.readers[k][index - self.offsets[k]]
        which = int(self.pool.corruption[j])
        if which >= 0:
            image = corrupt(image[None], self.corruptions[which], self.seed, torch.tensor([index]))[0]
        return image

    def noise(self, j: int) -> torch.Tensor:
        return torch.randn(self.shape, generator=torch_generator("noise", self.seed, int(self.pool.rows[j])))

    def __getitem__(self, j: int) -> Any:
        return (self.image(j), self.noise(j)) if self.with_noise else self.image(j)


def read_rows(images: PoolImages, rows: torch.Tensor, workers: int | None = None) -> torch.Tensor:
    """uint8 N×C×H×W of the given pool rows, read through a DataLoader with workers."""
    subset = torch.utils.data.Subset(PoolImages(images.readers, images.corruptions, images.seed, images.pool,
                                                with_noise=False), rows.tolist())
    workers = loader_workers() if workers is None else workers
    loader = torch.utils.data.DataLoader(subset, batch_size=LOADER_BATCH, num_workers=workers,
                                         persistent_workers=False)
    parts = list(loader)
    return torch.cat(parts) if parts else torch.zeros((0, *images.shape), dtype=torch.uint8)


class LazyImages:
    """``MixedData.images`` of a streamed pool: indexing (a bool mask, an index tensor, a slice or an
    int) reads just those rows; ``shape`` and ``len`` need no pixels. Methods that score pixels
    (classifier or quality annotation) hold the rows they index, the training loop holds none."""

    def __init__(self, images: PoolImages) -> None:
        self.source = images
        self.shape = torch.Size((len(images), *images.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> torch.Tensor:
        rows = torch.arange(len(self))[key]
        if rows.dim() == 0:
            return read_rows(self.source, rows[None], workers=0)[0]
        return read_rows(self.source, rows)


def content_hash(reader: ImageReader, workers: int | None = None) -> str:
    """``ImageSet.content_hash`` of the reader's images, computed in one streamed pass."""
    import hashlib

    digest = hashlib.sha256(str((len(reader), *reader.shape)).encode())
    workers = loader_workers() if workers is None else workers
    for batch in torch.utils.data.DataLoader(reader, batch_size=LOADER_BATCH, num_workers=workers):
        digest.update(batch.contiguous().numpy().tobytes())
    return digest.hexdigest()
