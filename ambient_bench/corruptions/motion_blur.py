"""Linear motion blur with the kernel and semantics of the ``imagecorruptions`` package."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ambient_bench.components import Corruption
from ambient_bench.params import Param
from ambient_bench.registry import register_corruption

# (radius, sigma) per severity 1..5, as in imagecorruptions' `motion_blur`
SEVERITIES = ((10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0))

# Upper bound on the gathered N×C×taps×H×W intermediate; taps are processed in chunks beyond it.
GATHER_BUDGET = 1 << 25


def motion_kernel(radius: int, sigma: float) -> np.ndarray:
    """One-sided Gaussian tap weights g(i) ∝ exp(-i²/(2σ²)), i = 0..2·radius, summing to 1."""
    i = np.arange(2 * radius + 1, dtype=np.float64)
    weights = np.exp(-(i ** 2) / (2 * sigma ** 2))
    return weights / weights.sum()


def tap_offsets(angle_deg: float, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets (dy_i, dx_i) = (round(i·sin θ), round(i·cos θ)) of every tap.

    Rounds halves down (ceil(v - 0.5)), as imagecorruptions does; with a random angle a tie
    only happens at θ = 0, where it cannot matter.
    """
    theta = math.radians(angle_deg)
    i = np.arange(taps, dtype=np.float64)
    return np.ceil(i * math.sin(theta) - 0.5).astype(np.int64), np.ceil(i * math.cos(theta) - 0.5).astype(np.int64)


def motion_blur_images(x: torch.Tensor, angles_deg: Sequence[float], radius: int, sigma: float) -> torch.Tensor:
    """Blur image n of ``x`` (N×C×H×W) along ``angles_deg[n]``; not clamped.

    out[y, x] = Σ_i g(i) · in[clamp(y + dy_i), clamp(x + dx_i)] (edge replication, rows
    growing downwards). Like imagecorruptions, the sum stops at the first tap whose shift
    reaches the image side (|dy_i| ≥ H or |dx_i| ≥ W) without renormalising, so very long
    kernels on small images lose some brightness.
    """
    n, c, h, w = x.shape
    kernel = motion_kernel(radius, sigma)
    taps = len(kernel)
    dy = np.empty((n, taps), dtype=np.int64)
    dx = np.empty((n, taps), dtype=np.int64)
    weights = np.empty((n, taps), dtype=np.float64)
    for k, angle in enumerate(angles_deg):
        dy[k], dx[k] = tap_offsets(float(angle), taps)
        inside = np.cumprod((np.abs(dy[k]) < h) & (np.abs(dx[k]) < w)).astype(bool)
        weights[k] = np.where(inside, kernel, 0.0)
    device = x.device
    dy_t, dx_t = torch.from_numpy(dy).to(device), torch.from_numpy(dx).to(device)
    weights_t = torch.from_numpy(weights).to(device=device, dtype=x.dtype)
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(x)
    chunk = max(1, GATHER_BUDGET // max(1, x.numel()))
    for start in range(0, taps, chunk):
        part = slice(start, min(taps, start + chunk))
        t = part.stop - part.start
        src_rows = (rows.view(1, 1, h) + dy_t[:, part, None]).clamp_(0, h - 1)   # N×T×H
        src_cols = (cols.view(1, 1, w) + dx_t[:, part, None]).clamp_(0, w - 1)   # N×T×W
        index = (src_rows[..., :, None] * w + src_cols[..., None, :]).view(n, 1, t * h * w)
        gathered = flat.gather(2, index.expand(n, c, t * h * w)).view(n, c, t, h, w)
        out += torch.einsum("ncthw,nt->nchw", gathered, weights_t[:, part])
    return out


@register_corruption("motion_blur")
class MotionBlur(Corruption):
    """Motion blur as imagecorruptions' `motion_blur` at `severity` 1..5, one random angle per image.

    Severity s selects (radius, σ) = (10,3), (15,5), (15,8), (15,12), (20,15); the kernel
    has 2·radius+1 taps with one-sided Gaussian weights g(i) ∝ exp(-i²/2σ²) summing to 1.
    Each image draws θ ~ U(-45°, 45°) from its own generator (one draw) and becomes
    Σ_i g(i) · in[y + round(i·sin θ), x + round(i·cos θ)] with edge replication, where x
    grows to the right and y downwards. Sign convention (imagecorruptions shifts the image
    by (-round(i·cos θ), -round(i·sin θ)) for tap i): every output pixel averages the
    content ahead of it along θ, so a bright point leaves a trail from itself towards -θ
    (at θ = 0, towards smaller x). Output in [0, 1]; the paper uses severity 3.
    """

    version = 1
    random = True
    params = {
        "severity": Param(3, "imagecorruptions severity 1..5 (kernel length and spread)", kind=int, ge=1, le=5),
    }
    test_params = {"severity": 1}
    gallery = [{"severity": s} for s in (1, 2, 3, 4, 5)]

    def angles(self, rngs: Sequence[np.random.Generator], n: int) -> list[float]:
        """The blur direction of each image in degrees, one uniform draw from its generator."""
        return [float(rngs[i].uniform(-45.0, 45.0)) for i in range(n)]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        radius, sigma = SEVERITIES[self.p.severity - 1]
        out = motion_blur_images(x, self.angles(rngs, x.shape[0]), radius, sigma)
        return out.clamp_(0, 1)
