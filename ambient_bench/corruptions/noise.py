"""Additive white Gaussian noise with a fixed standard deviation, clamped to the pixel range."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ambient_bench.components import Corruption
from ambient_bench.params import Param
from ambient_bench.registry import register_corruption


@register_corruption("gaussian_noise")
class GaussianNoise(Corruption):
    """Additive Gaussian noise of std `sigma` in [0, 1] pixel units, clamped to [0, 1].

    Image i gets x + sigma·z with z = ``rngs[i].standard_normal((C, H, W))`` (float64,
    cast to float32), then clamped to [0, 1]; the clamp makes the effective noise slightly
    smaller near black and white. The diffusion model works in [-1, 1], where the same
    noise has std 2·sigma (sigma = 0.1 here is σ = 0.2 in the model's units).
    """

    version = 1
    random = True
    params = {
        "sigma": Param(0.1, "noise std in [0, 1] pixel units (2× this in the model's [-1, 1] units)", ge=0),
    }
    test_params = {"sigma": 0.1}
    gallery = [{"sigma": s} for s in (0.025, 0.05, 0.1, 0.2, 0.4)]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        shape = tuple(x.shape[1:])
        z = np.stack([rngs[i].standard_normal(shape) for i in range(x.shape[0])]) if len(x) else np.zeros(x.shape)
        noise = torch.from_numpy(z).to(device=x.device, dtype=x.dtype)
        return (x + self.p.sigma * noise).clamp_(0, 1)
