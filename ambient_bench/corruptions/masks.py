"""Inpainting-style corruptions: random pixel dropout, a random square hole, one surviving grid cell."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ambient_bench.components import Corruption
from ambient_bench.params import Param
from ambient_bench.registry import register_corruption


def fill_masked(x: torch.Tensor, rngs: Sequence[np.random.Generator], fill: float,
                draw: Callable[[np.random.Generator, int, int], np.ndarray]) -> torch.Tensor:
    """Set to ``fill``, in every channel, the pixels where ``draw(rngs[i], H, W)`` (H×W bool) holds."""
    n, _, h, w = x.shape
    drop = np.stack([draw(rngs[i], h, w) for i in range(n)])
    mask = torch.from_numpy(drop).to(x.device)[:, None]
    return torch.where(mask, torch.full_like(x, fill), x)


def box_side(size: float, h: int, w: int) -> int:
    """Side in pixels of a square hole covering ``size`` of the shorter image side (at least 1)."""
    return min(min(h, w), max(1, int(size * min(h, w) + 0.5)))


@register_corruption("pixel_mask")
class PixelMask(Corruption):
    """Random pixel dropout: each pixel is set to `fill` with probability `fraction`.

    One Bernoulli draw per pixel location from the image's generator (``rng.random((H, W))
    < fraction``), shared by all channels, so a dropped pixel is `fill` (in [0, 1]) in every
    channel. The expected dropped share is `fraction`, not an exact count. Output in [0, 1].
    """

    version = 1
    random = True
    params = {
        "fraction": Param(0.5, "probability that a pixel is dropped", ge=0, le=1),
        "fill": Param(0.0, "value written into dropped pixels, in [0, 1]", ge=0, le=1),
    }
    test_params = {"fraction": 0.3}
    gallery = [{"fraction": f} for f in (0.1, 0.25, 0.5, 0.75, 0.9)]

    def dropped(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        return rng.random((height, width)) < self.p.fraction

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        return fill_masked(x, rngs, self.p.fill, self.dropped)


@register_corruption("box_mask")
class BoxMask(Corruption):
    """One square hole of side `size` × the shorter image side, set to `fill`, at a random place.

    The side is round(size · min(H, W)) pixels (at least 1); the top-left corner is drawn
    uniformly among the positions that keep the whole square inside the image (row first,
    then column, from the image's generator). The hole is `fill` (in [0, 1]) in every
    channel. Output in [0, 1].
    """

    version = 1
    random = True
    params = {
        "size": Param(0.25, "side of the square as a fraction of the shorter image side", gt=0, lt=1),
        "fill": Param(0.0, "value written into the hole, in [0, 1]", ge=0, le=1),
    }
    test_params = {"size": 0.3}
    gallery = [{"size": s} for s in (0.125, 0.25, 0.375, 0.5, 0.625)]

    def dropped(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        side = box_side(self.p.size, height, width)
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        drop = np.zeros((height, width), dtype=bool)
        drop[top:top + side, left:left + side] = True
        return drop

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        return fill_masked(x, rngs, self.p.fill, self.dropped)


def grid_cell_bounds(cell: int, grid: int, height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns of cell ``cell`` (row-major) of a ``grid``×``grid`` partition of an H×W image."""
    row, col = divmod(cell, grid)
    return (slice(row * height // grid, (row + 1) * height // grid),
            slice(col * width // grid, (col + 1) * width // grid))


@register_corruption("grid_crop")
class GridCrop(Corruption):
    """Only one cell of a `grid`×`grid` partition survives (a crop); the rest is set to `fill`.

    The kept cell is drawn uniformly (one integer from the image's generator), so every image is
    one of grid² disjoint crops of a full one: partial data as Bootstrapping Diffusion's crop views
    see it. Cell boundaries are i·H // grid. Output in [0, 1].
    """

    version = 1
    random = True
    params = {
        "grid": Param(2, "cells per side; one of grid² disjoint crops survives", kind=int, ge=2),
        "fill": Param(0.0, "value written outside the kept cell, in [0, 1]", ge=0, le=1),
    }
    test_params = {"grid": 2}
    gallery = [{"grid": g} for g in (2, 3, 4)]

    def kept_cell(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.p.grid ** 2))

    def dropped(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        rows, cols = grid_cell_bounds(self.kept_cell(rng), self.p.grid, height, width)
        drop = np.ones((height, width), dtype=bool)
        drop[rows, cols] = False
        return drop

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        return fill_masked(x, rngs, self.p.fill, self.dropped)
