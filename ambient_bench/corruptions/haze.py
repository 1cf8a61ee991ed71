"""Haze: the atmospheric scattering model with a smooth random transmission map."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ambient_bench.components import Corruption
from ambient_bench.params import Param
from ambient_bench.registry import register_corruption

# A handful of waves of at most MAX_CYCLES periods across the image: the map can only vary
# on the scale of the whole image, whatever the resolution (low-frequency by construction).
COMPONENTS = 4
MAX_CYCLES = 1.5


def smooth_field(h: int, w: int, rngs: Sequence[np.random.Generator],
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """N×1×H×W random fields with zero mean and max |value| = 1, one per generator.

    Each is a sum of COMPONENTS plane waves with random direction, frequency (≤ MAX_CYCLES
    periods per image side), phase and amplitude. Per image the draws are, in order:
    frequencies along x and y (COMPONENTS each, signed), phases, amplitudes.
    """
    draws = np.stack([np.concatenate([rng.uniform(-MAX_CYCLES, MAX_CYCLES, size=2 * COMPONENTS),
                                      rng.uniform(0, 2 * math.pi, size=COMPONENTS),
                                      rng.uniform(0.3, 1.0, size=COMPONENTS)]) for rng in rngs])
    # Built on the CPU in float64 (small: N×K×H×W) so that every device gets the same map
    # and devices without float64 still work.
    fx, fy, phase, amp = torch.from_numpy(draws).split(COMPONENTS, dim=1)
    # Pixel centres in units of the image side, so cycles are per image, not per pixel.
    u = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    v = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    angle = 2 * math.pi * (fx[:, :, None, None] * u.view(1, 1, 1, w) + fy[:, :, None, None] * v.view(1, 1, h, 1))
    field = (amp[:, :, None, None] * torch.cos(angle + phase[:, :, None, None])).sum(dim=1, keepdim=True)
    field = field - field.mean(dim=(2, 3), keepdim=True)
    # A 1×1 image (or an unlucky flat draw) has no variation to normalise.
    peak = field.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return (field / peak).to(device=device, dtype=torch.float32)


@register_corruption("haze")
class Haze(Corruption):
    """Fog: x' = x·t + airlight·(1 − t) with a smooth random transmission map t of mean exp(−density).

    ``density`` ≥ 0 is the optical depth (0 = identity; 0.7 halves the signal on average).
    ``airlight`` in [0, 1] is the grey level of the fog, the same for every channel, so grey
    and colour images are hazed alike. ``variation`` in [0, 1] sets how much t varies across
    the image relative to the most it can (t stays in [0, 1] and its mean stays exactly
    exp(−density)); the pattern of variation is drawn from each image's generator.
    """

    version = 1
    params = {
        "density": Param(0.5, "mean optical depth: mean transmission is exp(-density)", ge=0),
        "airlight": Param(0.8, "grey level of the scattered light", ge=0, le=1),
        "variation": Param(0.5, "spatial variation of the transmission, as a fraction of its headroom", ge=0, le=1),
    }
    test_params = {"density": 0.5}
    random = True
    gallery = [{"density": d} for d in (0.2, 0.4, 0.7, 1.0, 1.5)]

    def transmission(self, n: int, h: int, w: int, rngs: Sequence[np.random.Generator],
                     device: torch.device | str = "cpu") -> torch.Tensor:
        """N×1×H×W transmission maps in [0, 1], each with mean exp(−density)."""
        mean = math.exp(-self.p.density)
        if n == 0:
            return torch.empty(0, 1, h, w, device=device)
        swing = self.p.variation * min(mean, 1.0 - mean)  # keeps mean ± swing inside [0, 1]
        return mean + swing * smooth_field(h, w, rngs[:n], device)

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        n, _, h, w = x.shape
        t = self.transmission(n, h, w, rngs, x.device)
        return (x * t + self.p.airlight * (1 - t)).clamp(0, 1)
