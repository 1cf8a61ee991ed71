"""Training pools: clean + corrupted + out-of-distribution, decided per image from its index.

Each dataset image i gets a uniform number u_i from a generator seeded by (seed, i). It is
corrupted when u_i < 1 - clean_fraction, so the images corrupted at a higher clean fraction
are a subset of those corrupted at a lower one (the paper's 50/50 classifier set and 10/90
diffusion set share one coin). With several corruptions, each corrupted image draws one of
them uniformly from its own generator. Images a dataset itself marks as low quality or out of
distribution (a user's own folders) keep that label and are never corrupted again. Every pool
image gets a fixed Gaussian draw Z_i, used by the ambient loss as x0 + sigma_min * Z_i.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ambient_bench.components import HIGH_QUALITY, LOW_QUALITY, OUT_OF_DISTRIBUTION, Corruption, ImageSet, MixedData
from ambient_bench.data.images import to_uint8
from ambient_bench.errors import UserError
from ambient_bench.seeding import numpy_rng, torch_generator


def coin(seed: int, indices: np.ndarray) -> np.ndarray:
    """u_i ~ U[0, 1) for each image index: the clean/corrupted coin."""
    return np.array([numpy_rng("coin", seed, int(i)).random() for i in indices])


def fixed_noise(seed: int, indices: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Z_i ~ N(0, I) of the given per-image shape, one independent draw per pool index."""
    return torch.stack([torch.randn(shape, generator=torch_generator("noise", seed, int(i)))
                        for i in indices.tolist()])


def choose_corruption(seed: int, indices: torch.Tensor, count: int) -> torch.Tensor:
    """Which of ``count`` listed corruptions each image gets, uniformly from its own generator."""
    if count == 1:
        return torch.zeros(len(indices), dtype=torch.int8)
    return torch.tensor([numpy_rng("which-corruption", seed, int(i)).integers(count) for i in indices.tolist()],
                        dtype=torch.int8)


@dataclass
class PoolLayout:
    """Everything about a pool but its pixels: which dataset image or OOD image each row is, and
    what happens to it. Decided from indices and seeds alone, so a pool streamed from disk
    (``data/pool.py``) and one built in memory (``mix``) are the same pool."""

    rows: torch.Tensor        # int64: per pool row, its position in the dataset + OOD sources concatenated
    corrupted: torch.Tensor
    ood: torch.Tensor
    corruption: torch.Tensor  # int8, -1 = none
    labels: torch.Tensor | None


def layout(n: int, origin: torch.Tensor, labels: torch.Tensor | None, clean_fraction: float, num_corruptions: int,
           seed: int, ood_counts: Sequence[int] = (), discard_rest: bool = False,
           max_clean: int | None = None) -> PoolLayout:
    """The pool of a dataset of ``n`` images (``origin``: their sources) and OOD sources of ``ood_counts``.

    ``max_clean`` keeps only that many of the images the coin left clean, those with the highest coin
    values, so the clean sets of increasing ``max_clean`` are nested and the corrupted images unchanged."""
    u = coin(seed, np.arange(n))
    unlucky = torch.from_numpy(u < 1.0 - clean_fraction) & (origin == HIGH_QUALITY)
    keep = ~unlucky if discard_rest else torch.ones(n, dtype=torch.bool)
    if max_clean is not None:
        clean = torch.nonzero(~unlucky & (origin == HIGH_QUALITY)).flatten()
        surplus = clean[torch.from_numpy(np.argsort(-u[clean.numpy()], kind="stable"))][max_clean:]
        keep[surplus] = False
    index = torch.arange(n)[keep]
    corrupted = (unlucky | (origin == LOW_QUALITY))[keep]
    ood = (origin == OUT_OF_DISTRIBUTION)[keep]
    which = torch.full((len(index),), -1, dtype=torch.int8)
    labels = None if labels is None else labels[keep].long()
    todo = torch.nonzero(unlucky[keep]).flatten()
    if num_corruptions and len(todo):
        which[todo] = choose_corruption(seed, index[todo], num_corruptions)
    for m in ood_counts:
        index = torch.cat([index, n + torch.arange(m)])
        corrupted = torch.cat([corrupted, torch.zeros(m, dtype=torch.bool)])
        ood = torch.cat([ood, torch.ones(m, dtype=torch.bool)])
        which = torch.cat([which, torch.full((m,), -1, dtype=torch.int8)])
        if labels is not None:  # no class of the target's label space
            labels = torch.cat([labels, torch.full((m,), -1, dtype=torch.long)])
        n += m
    return PoolLayout(index, corrupted, ood, which, labels)


def corrupt(images: torch.Tensor, corruption: Corruption, seed: int, indices: torch.Tensor) -> torch.Tensor:
    """uint8 images after ``corruption``, each drawing from its own generator (seed, index)."""
    rngs = [numpy_rng("corruption", seed, int(i)) for i in indices]
    return to_uint8(corruption.apply(images.float() / 255.0, rngs).clamp(0, 1))


def mix(source: ImageSet, clean_fraction: float, corruptions: Sequence[Corruption], seed: int,
        ood_sources: Sequence[ImageSet] = (), discard_rest: bool = False, batch_size: int = 256,
        progress: Callable | None = None, max_clean: int | None = None) -> MixedData:
    """Build the pool: the dataset (coin flip, corruptions or discarding), then each OOD source.

    With no corruption the images the coin does not keep clean are only flagged (a method that
    ignores them can share this pool); ``discard_rest`` drops them instead (the paper's
    'Dogs (10%)' setting).
    """
    n = len(source)
    for k, extra in enumerate(ood_sources):
        if extra.images.shape[1:] != source.images.shape[1:]:
            raise UserError(f"out-of-distribution source {k + 1} has images of shape {tuple(extra.images.shape[1:])} "
                            f"but the dataset's are {tuple(source.images.shape[1:])}; set its resolution/channels")
    origin = source.source if source.source is not None else torch.full((n,), HIGH_QUALITY, dtype=torch.int8)
    pool = layout(n, origin, source.labels, clean_fraction, len(corruptions), seed,
                  [len(extra) for extra in ood_sources], discard_rest, max_clean)
    images = torch.cat([source.images, *(extra.images for extra in ood_sources)])[pool.rows]
    todo = torch.nonzero(pool.corruption >= 0).flatten()
    starts = range(0, len(todo), batch_size)
    for start in (progress(starts, desc="corrupt", unit="batch") if progress and len(todo) else starts):
        rows = todo[start:start + batch_size]
        for c, corruption in enumerate(corruptions):
            rows_c = rows[pool.corruption[rows] == c]
            if len(rows_c):
                images[rows_c] = corrupt(images[rows_c], corruption, seed, pool.rows[rows_c])
    noise = fixed_noise(seed, pool.rows, tuple(source.images.shape[1:]))
    return MixedData(images=images, corrupted=pool.corrupted, ood=pool.ood, noise=noise, index=pool.rows,
                     corruption=pool.corruption, labels=pool.labels)
