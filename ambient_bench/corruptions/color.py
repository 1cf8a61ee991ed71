"""Global colour and tone changes: low-frequency corruptions that added noise does not hide.

Blur and JPEG remove detail that noise at a moderate level destroys anyway; a wrong colour
balance or contrast survives almost every noise level, so these sit at the other end of the
benchmark's range. All three act on whole images (no spatial structure at all).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ambient_bench.components import Corruption
from ambient_bench.data.images import REC601
from ambient_bench.params import Param
from ambient_bench.registry import register_corruption

def luminance(x: torch.Tensor) -> torch.Tensor:
    """N×1×H×W luma: Rec. 601 weights for C=3, the plain channel mean for any other C."""
    c = x.shape[1]
    if c == 3:
        weights = torch.tensor(REC601, dtype=x.dtype, device=x.device)
    else:
        weights = torch.full((c,), 1.0 / c, dtype=x.dtype, device=x.device)
    return (x * weights.view(1, c, 1, 1)).sum(dim=1, keepdim=True)


def blend_with_mean(x: torch.Tensor, factor: float) -> torch.Tensor:
    """mean + factor·(x − mean), the mean taken per image over channels and pixels."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + factor * (x - mean)).clamp(0, 1)


@register_corruption("saturation")
class Saturation(Corruption):
    """Colour saturation: blend every pixel with its Rec. 601 luminance by `factor`.

    ``factor`` ≥ 0: 0 = grey image, 1 = identity, > 1 oversaturated (clamped to [0, 1]).
    Grey images (C=1) have no colour to remove; so that the corruption still degrades them,
    they get the nearest global change instead: contrast around the image mean with the same
    factor (0 = flat image at the mean).
    """

    version = 1
    params = {"factor": Param(0.5, "weight of the colour: 0 = grey, 1 = identity, > 1 oversaturated", ge=0)}
    test_params = {"factor": 0.5}
    gallery = [{"factor": f} for f in (0.75, 0.5, 0.25, 0.0)]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        if x.shape[1] == 1:
            return blend_with_mean(x, self.p.factor)
        grey = luminance(x)
        return (grey + self.p.factor * (x - grey)).clamp(0, 1)


@register_corruption("color_shift")
class ColorShift(Corruption):
    """Per-image colour cast: add one random offset per channel, uniform in [-strength, strength].

    The offsets are drawn from image i's generator (C values, in channel order) and the result
    is clamped to [0, 1]. On grey images (C=1) this is a random brightness shift.
    """

    version = 1
    params = {"strength": Param(0.1, "largest offset per channel, in [0, 1] intensity units", ge=0, le=1)}
    test_params = {"strength": 0.1}
    random = True
    gallery = [{"strength": s} for s in (0.05, 0.1, 0.2, 0.3)]

    def offsets(self, channels: int, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        """N×C offsets, one row per image from that image's generator."""
        s = self.p.strength
        return np.stack([rng.uniform(-s, s, size=channels) for rng in rngs]).astype(np.float32)

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        n, c = x.shape[:2]
        if n == 0:
            return x.clone()
        shift = torch.from_numpy(self.offsets(c, rngs[:n])).to(x.device)
        return (x + shift.view(n, c, 1, 1)).clamp(0, 1)


@register_corruption("contrast")
class Contrast(Corruption):
    """Contrast change around the per-image mean: x' = mean + factor·(x − mean).

    The mean is taken over all channels and pixels of each image, so colour balance is kept.
    ``factor`` in (0, 1) lowers contrast (0 = flat image at its mean), 1 is the identity,
    > 1 raises it (clamped to [0, 1]). Grey and colour images are treated alike.
    """

    version = 1
    params = {"factor": Param(0.5, "contrast multiplier: < 1 flatter, 1 = identity", ge=0)}
    test_params = {"factor": 0.5}
    gallery = [{"factor": f} for f in (0.8, 0.6, 0.4, 0.2)]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        return blend_with_mean(x, self.p.factor)
