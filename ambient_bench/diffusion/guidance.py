"""Guidance by a second network (EDM2 autoguidance / classifier-free guidance, Karras et al. 2024):

    D_w(x; σ, c) = D_g(x; σ) + w·(D(x; σ, c) − D_g(x; σ))

with D_g a separate guide (an unconditional or smaller, less trained network). w = 1 is the main
network alone, returned as is so that it is exactly the unguided sampler; the paper's ImageNet numbers
use w = 1.2 (FID) and 1.7 (FD_DINOv2).
"""
from __future__ import annotations

from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided(main: Denoiser, guide: Denoiser | None, weight: float) -> Denoiser:
    """The guided denoiser; ``main`` itself when ``weight`` is 1 (no guide evaluation at all)."""
    if weight == 1:
        return main
    if guide is None:
        from ambient_bench.errors import UserError

        raise UserError(f"sample.guidance {weight:g} needs a guide network (sample.guide); set guidance: 1 to "
                        f"sample without one")

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        ref = guide(x, sigma)
        return ref.lerp(main(x, sigma), weight)

    return denoise
