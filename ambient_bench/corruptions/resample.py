"""Resolution loss at the original size: blocky pixelation and a smooth low-resolution view."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ambient_bench.components import Corruption
from ambient_bench.params import Param
from ambient_bench.registry import register_corruption


def block_average(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Replace every factor×factor block of ``x`` (…×H×W) by its mean, keeping the shape.

    Blocks start at the top-left corner; when H or W is not a multiple of ``factor`` the
    last row/column of blocks is narrower and averages only the pixels it contains.
    """
    h, w = x.shape[-2:]
    hb, wb = -(-h // factor), -(-w // factor)
    pad = (0, wb * factor - w, 0, hb * factor - h)
    padded = F.pad(x, pad)
    counts = F.pad(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device), pad)
    sums = padded.reshape(*x.shape[:-2], hb, factor, wb, factor).sum(dim=(-3, -1))
    sizes = counts.reshape(hb, factor, wb, factor).sum(dim=(-3, -1))
    means = sums / sizes
    rows = torch.arange(h, device=x.device) // factor
    cols = torch.arange(w, device=x.device) // factor
    return means.index_select(-2, rows).index_select(-1, cols)


def low_resolution(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Antialiased bicubic down to (round(H/factor), round(W/factor)), bicubic back up; not clamped.

    Halves round up (30 px by factor 4 gives 8 px), so the effective factor per axis is
    H / round(H/factor).
    """
    h, w = x.shape[-2:]
    small = (max(1, int(h / factor + 0.5)), max(1, int(w / factor + 0.5)))
    if small == (h, w):
        return x.clone()
    down = F.interpolate(x, size=small, mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(down, size=(h, w), mode="bicubic", align_corners=False)


@register_corruption("pixelate")
class Pixelate(Corruption):
    """Blocky pixelation: each `factor`×`factor` block is replaced by its mean colour.

    Equivalent to area-averaging down by the integer `factor` and nearest-neighbour
    upsampling back, so the output has the input's shape and is constant on blocks.
    Blocks are anchored at the top-left; for sizes not divisible by `factor` the last
    blocks are cropped and average only the pixels they cover. Output in [0, 1].
    """

    version = 1
    params = {
        "factor": Param(4, "block side in pixels (1 = identity)", kind=int, ge=1),
    }
    test_params = {"factor": 2}
    gallery = [{"factor": f} for f in (2, 3, 4, 6, 8)]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        if self.p.factor == 1:
            return x.clone()
        return block_average(x, self.p.factor).clamp_(0, 1)


@register_corruption("downsample")
class Downsample(Corruption):
    """A true low-resolution view by `factor`, resized back so that every image keeps one shape.

    Antialiased bicubic downsampling (torch ``interpolate(..., antialias=True)``, like
    PIL's BICUBIC resize) to (round(H/factor), round(W/factor)), at least 1 pixel, then
    bicubic upsampling to H×W. The information content is that of the small image: detail
    above its Nyquist frequency is gone, and the output is smooth rather than blocky. For
    sizes not divisible by `factor` the small size is rounded to the nearest integer (halves
    up), so the effective factor per axis is H/round(H/factor). Bicubic overshoot is clamped: output in [0, 1].
    """

    version = 1
    params = {
        "factor": Param(2.0, "downsampling factor per side (1 = identity)", ge=1),
    }
    test_params = {"factor": 2.0}
    gallery = [{"factor": f} for f in (1.5, 2.0, 3.0, 4.0)]

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        return low_resolution(x, self.p.factor).clamp_(0, 1)
