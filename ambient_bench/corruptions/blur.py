"""Gaussian blur with the semantics of ``scipy.ndimage.gaussian_filter`` (the paper's blur)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ambient_bench.components import Corruption
from ambient_bench.params import Param
from ambient_bench.registry import register_corruption


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy's kernel: radius int(truncate * sigma + 0.5), weights normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def symmetric_pad_index(n: int, radius: int) -> torch.Tensor:
    """Source index of every position of a length-n axis padded by ``radius`` on both sides.

    scipy's 'reflect' mode (d c b a | a b c d | d c b a), repeated for radii wider than the axis.
    """
    i = torch.arange(-radius, n + radius) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Blur the last two axes of ``x`` (…×H×W) with a separable Gaussian, per channel."""
    if sigma == 0:
        return x.clone()
    kernel = torch.as_tensor(gaussian_kernel1d(sigma, truncate), dtype=x.dtype, device=x.device)
    radius = kernel.numel() // 2
    shape = x.shape
    h, w = shape[-2:]
    out = x.reshape(-1, 1, h, w)
    out = out.index_select(2, symmetric_pad_index(h, radius).to(x.device))
    out = F.conv2d(out, kernel.view(1, 1, -1, 1))
    out = out.index_select(3, symmetric_pad_index(w, radius).to(x.device))
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return out.reshape(shape)


@register_corruption("gaussian_blur")
class GaussianBlur(Corruption):
    """Isotropic Gaussian blur, std `sigma` in pixels (scipy reflect padding, truncate 4)."""

    version = 1
    params = {
        "sigma": Param(1.0, "blur std in pixels at the dataset's resolution (0 = identity)", ge=0),
        "truncate": Param(4.0, "kernel radius in stds, as scipy's `truncate`", gt=0),
    }
    test_params = {"sigma": 0.6}
    gallery = [{"sigma": s} for s in (0.4, 0.6, 0.8, 1.0)]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        return gaussian_filter(x, self.p.sigma, self.p.truncate)
