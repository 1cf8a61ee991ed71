"""Gaussian blur with the semantics of ``scipy.ndimage.gaussian_filter`` (the paper's blur)."""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

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


@functools.lru_cache(maxsize=64)
def _filter_matrix(n: int, sigma: float, truncate: float, dtype: torch.dtype, device: str,
                   transposed: bool = False) -> torch.Tensor:
    matrix = filter_matrix(n, gaussian_kernel1d(sigma, truncate))
    # contiguous, not a transposed view: a strided right operand sends matmul down a path
    # several times slower for these small batched products
    return torch.as_tensor(np.ascontiguousarray(matrix.T if transposed else matrix), dtype=dtype, device=device)


def filter_matrix(n: int, kernel: np.ndarray) -> np.ndarray:
    """The n×n matrix of a 1-D correlation with scipy's 'reflect' boundary (float64).

    Padding is linear, so padding and filtering together are one matrix: applying it is a
    batched matrix product, far faster than padding and convolving single-channel images.
    """
    radius = len(kernel) // 2
    source = symmetric_pad_index(n, radius).numpy()
    rows = np.repeat(np.arange(n), len(kernel))
    cols = source[(np.arange(n)[:, None] + np.arange(len(kernel))[None, :]).ravel()]
    matrix = np.zeros((n, n))
    np.add.at(matrix, (rows, cols), np.tile(kernel, n))
    return matrix


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Blur the last two axes of ``x`` (…×H×W) with a separable Gaussian, per channel."""
    if sigma == 0:
        return x.clone()
    h, w = x.shape[-2:]
    along_h = _filter_matrix(h, sigma, truncate, x.dtype, str(x.device))
    along_w_t = _filter_matrix(w, sigma, truncate, x.dtype, str(x.device), transposed=True)
    # W first: x @ M_wᵀ folds the batch into one large GEMM; M_h @ y is a batched product. The
    # half-blurred batch is a fresh multi-MiB block per call: cheap with the allocator settings
    # the CLI applies (ambient_bench.allocator), page-faulted in each time with glibc's defaults.
    return torch.matmul(along_h, torch.matmul(x, along_w_t))


@register_corruption("gaussian_blur")
class GaussianBlur(Corruption):
    """Isotropic Gaussian blur, std `sigma` in pixels (scipy reflect padding, truncate 4)."""

    version = 1
    params = {
        # bounded: the filter is an n×n matrix built from a kernel of 2·truncate·sigma + 1 taps
        "sigma": Param(1.0, "blur std in pixels at the dataset's resolution (0 = identity)", ge=0, le=1000),
        "truncate": Param(4.0, "kernel radius in stds, as scipy's `truncate`", gt=0, le=20),
    }
    test_params = {"sigma": 0.6}
    gallery = [{"sigma": s} for s in (0.4, 0.6, 0.8, 1.0)]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        return gaussian_filter(x, self.p.sigma, self.p.truncate)
