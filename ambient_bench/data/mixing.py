"""Clean + corrupted mixtures, decided per image and reproducible from the image index alone.

Each source image i gets a uniform number u_i drawn from a generator seeded by (seed, i).
It is corrupted when u_i < 1 - clean_fraction, so the images corrupted at a higher clean
fraction are a subset of those corrupted at a lower one (as in the paper's 50/50 classifier
set and 10/90 diffusion set). Each image also gets a fixed Gaussian draw Z_i, used by the
ambient loss as the "annotation noise" x0 + sigma_min * Z_i.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ambient_bench.components import Corruption, ImageSet, MixedData
from ambient_bench.data.images import to_uint8
from ambient_bench.seeding import numpy_rng, torch_generator


def coin(seed: int, indices: np.ndarray) -> np.ndarray:
    """u_i ~ U[0, 1) for each image index: the clean/corrupted coin."""
    return np.array([numpy_rng("coin", seed, int(i)).random() for i in indices])


def fixed_noise(seed: int, indices: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Z_i ~ N(0, I) of the given per-image shape, one independent draw per image index."""
    return torch.stack([torch.randn(shape, generator=torch_generator("noise", seed, int(i)))
                        for i in indices.tolist()])


def mix(source: ImageSet, clean_fraction: float, corruption: Corruption | None, seed: int,
        batch_size: int = 256, progress: Callable | None = None) -> MixedData:
    """Corrupt the images whose coin says so; with ``corruption=None`` only flag them."""
    n = len(source)
    index = torch.arange(n)
    corrupted = torch.from_numpy(coin(seed, index.numpy()) < 1.0 - clean_fraction)
    images = source.images.clone()
    todo = torch.nonzero(corrupted).flatten()
    if corruption is not None and len(todo):
        starts = range(0, len(todo), batch_size)
        for start in (progress(starts, desc="corrupt", unit="batch") if progress else starts):
            idx = todo[start:start + batch_size]
            rngs = [numpy_rng("corruption", seed, int(i)) for i in idx]
            x = images[idx].float() / 255.0
            images[idx] = to_uint8(corruption.apply(x, rngs).clamp(0, 1))
    noise = fixed_noise(seed, index, tuple(source.images.shape[1:]))
    return MixedData(images=images, corrupted=corrupted, noise=noise, index=index)
