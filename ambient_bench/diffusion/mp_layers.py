"""Magnitude-preserving primitives of EDM2 (Karras et al. 2024, "Analyzing and Improving the Training
Dynamics of Diffusion Models", §2–3), written from the paper's description.

Every operation keeps unit-variance inputs at unit variance in expectation, so activations and
weights cannot drift in magnitude during training: weights are normalised to unit norm per output
channel in the forward pass *and* written back normalised after each step (forced weight
normalisation), sums and concatenations are rescaled, SiLU is divided by its output std.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# std of silu(x) for x ~ N(0, 1): mp_silu has unit output variance
SILU_STD = 0.596


def normalize(x: torch.Tensor, dim: list[int] | None = None, eps: float = 1e-4) -> torch.Tensor:
    """Scale each slice along dim 0 (or over ``dim``) to unit mean square (norm = sqrt(numel))."""
    if dim is None:
        dim = list(range(1, x.ndim))
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32  # half precision: the norm in fp32
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=wide)
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))
    return x / norm.to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) / SILU_STD


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """(1-t)·a + t·b, rescaled so that two independent unit-variance inputs give unit variance."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t ** 2)


def mp_cat(a: torch.Tensor, b: torch.Tensor, dim: int = 1, t: float = 0.5) -> torch.Tensor:
    """Concatenate with weights (1-t) and t on the two parts, preserving the overall magnitude."""
    na, nb = a.shape[dim], b.shape[dim]
    scale = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
    return torch.cat([a * (scale / math.sqrt(na) * (1 - t)), b * (scale / math.sqrt(nb) * t)], dim=dim)


class MPFourier(nn.Module):
    """Random Fourier features of a scalar (the noise level), unit variance: sqrt(2)·cos(f·x + φ)."""

    def __init__(self, channels: int, bandwidth: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("freqs", 2 * np.pi * torch.randn(channels) * bandwidth)
        self.register_buffer("phases", 2 * np.pi * torch.rand(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(torch.float32).ger(self.freqs.to(torch.float32)) + self.phases.to(torch.float32)
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class MPConv(nn.Module):
    """Convolution (kernel k×k) or linear layer (kernel ()) with forced weight normalisation and no bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...]) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        w = self.weight.to(torch.float32)
        if self.training:  # forced weight normalisation: the stored weights stay on the unit sphere
            with torch.no_grad():
                self.weight.copy_(normalize(w))
        w = normalize(w)
        w = (w * (gain / math.sqrt(w[0].numel()))).to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


def resample(x: torch.Tensor, mode: str) -> torch.Tensor:
    """'down': 2×2 box average; 'up': 2× nearest neighbour; 'keep': unchanged."""
    if mode == "down":
        return F.avg_pool2d(x, 2)
    if mode == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return x
