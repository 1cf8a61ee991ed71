"""sigma_max of out-of-distribution images from crops classifiers (paper §3.2, Figs. 6 and 20).

Each crop size K has its own classifier of "target distribution vs out-of-distribution" on
zero-padded K×K windows. At annotation every non-overlapping K×K tile of an image is pasted
alone on a zero canvas and classified at sigma = 0.001; m_K is the mean P(target) over the
tiles. K* is the largest K with m_K above the threshold, and sigma_max = table[K*]: the noise
level below which a denoiser only looks at about K×K pixels, so the image's crops are as good
as the target distribution's.
"""
from __future__ import annotations

import numpy as np
import torch

from ambient_bench import distributed

ANNOTATION_SIGMA = 0.001
# crop size (pixels at 64×64) → sigma_max, the official release's table (training_loop.py);
# K = 1 is what an image gets when no crop size passes the threshold.
PAPER_TABLE_64 = {1: 0.01, 4: 0.05, 8: 0.15, 16: 0.20, 24: 0.35, 32: 0.55, 48: 0.70, 64: 1.0}
PAPER_CROP_SIZES_64 = (4, 8, 16, 24)


def _scale(size: int, resolution: int) -> int:
    return max(2, round(size * resolution / 64))  # a 1-pixel crop says nothing about locality


def scaled_crop_sizes(resolution: int, sizes_at_64: tuple[int, ...] = PAPER_CROP_SIZES_64) -> list[int]:
    """The paper's crop sizes at 64 px scaled to ``resolution`` (at least 2 pixels, no duplicates)."""
    return sorted({_scale(k, resolution) for k in sizes_at_64})


def scaled_table(resolution: int, table_at_64: dict[int, float] = PAPER_TABLE_64) -> dict[int, float]:
    """The 64 px crop → sigma_max table with crop sizes scaled to ``resolution``.

    Where two sizes land on the same scaled size the larger original wins (its sigma is the
    one measured for that much context); K = 1, the value of images no crop size passes, stays.
    """
    table = {_scale(k, resolution): sigma for k, sigma in sorted(table_at_64.items()) if k > 1}
    return {1: table_at_64[1], **table} if 1 in table_at_64 else table


def tile_origins(resolution: int, crop: int) -> list[tuple[int, int]]:
    """Top-left corners of the K-stride grid; edge tiles may be partial (K = 24 on 64 px: 0, 24, 48)."""
    starts = range(0, resolution, crop)
    return [(top, left) for top in starts for left in starts]


def window_mask(resolution: int, crop: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """N×1×R×R float mask, 1 inside each image's crop×crop window at (top, left)."""
    coords = torch.arange(resolution, device=top.device)
    rows = (coords >= top[:, None]) & (coords < top[:, None] + crop)
    cols = (coords >= left[:, None]) & (coords < left[:, None] + crop)
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1).float()


def tile_canvases(images: torch.Tensor, crop: int) -> torch.Tensor:
    """N×T×C×H×W: each tile of each image alone on a zero canvas (model-space images)."""
    n, _, h, w = images.shape
    tops, lefts = torch.tensor(tile_origins(h, crop), device=images.device).T
    masks = window_mask(h, crop, tops, lefts).to(images.dtype)  # T×1×H×W
    return images[:, None] * masks[None]


@torch.no_grad()
def tile_probabilities(classifier: torch.nn.Module, images: torch.Tensor, crop: int, seed_noise: torch.Generator,
                       batch: int = 2048, forward_batch: int | None = None) -> torch.Tensor:
    """N×T P(target) of every tile at sigma = 0.001, batched over images × tiles.

    Noise is drawn per block of ``batch`` tiles (that fixes the numbers); each block goes through
    the classifier ``forward_batch`` tiles at a time (default: the device's cache-sized pass, as
    in sigma_min.auto_batch; 2,048 64-px tiles at once ran 20× slower on a CPU), channels-last.
    """
    from ambient_bench.annotation.sigma_min import auto_batch

    canvases = tile_canvases(images, crop)
    n, t = canvases.shape[:2]
    flat = canvases.reshape(n * t, *canvases.shape[2:])
    forward_batch = forward_batch or auto_batch(classifier, tuple(flat.shape[1:]), flat.device)
    starts = range(0, len(flat), batch)
    # the generator's stream fixes the numbers: every rank draws every block's noise, in order
    noise = [torch.randn(flat[start:start + batch].shape, generator=seed_noise, device=flat.device) for start in starts]

    def one_block(b: int) -> torch.Tensor:
        chunk = flat[starts[b]:starts[b] + batch]
        inputs = (chunk + ANNOTATION_SIGMA * noise[b]).contiguous(memory_format=torch.channels_last)
        sigma = torch.full((len(chunk),), ANNOTATION_SIGMA, device=chunk.device)
        return torch.cat([torch.sigmoid(classifier(inputs[i:i + forward_batch], sigma[i:i + forward_batch]).float())
                          for i in range(0, len(inputs), forward_batch)]).cpu()

    probs = distributed.split_map(one_block, len(starts), what=f"crops classifier on {n * t} tiles")
    return torch.cat(probs).reshape(n, t) if probs else torch.zeros(n, t)


def choose_sigma_max(mean_by_crop: dict[int, np.ndarray], table: dict[int, float], threshold: float) -> np.ndarray:
    """sigma_max = table[K*], K* the largest crop size whose mean P(target) exceeds ``threshold``.

    Images where no crop size passes get the table's smallest sigma (the release's K* = 1).
    """
    missing = [k for k in mean_by_crop if k not in table]
    if missing:
        raise ValueError(f"crop sizes {missing} have no entry in the crop → sigma_max table {table}")
    n = len(next(iter(mean_by_crop.values())))
    sigma_max = np.full(n, min(table.values()), dtype=np.float64)
    for k in sorted(mean_by_crop):  # larger passing sizes overwrite smaller ones
        sigma_max = np.where(mean_by_crop[k] > threshold, table[k], sigma_max)
    return sigma_max
