"""EDM's deterministic second-order Heun sampler (Karras et al., 2022, Algorithm 1)."""
from __future__ import annotations

from typing import Callable

import torch


def edm_sigma_steps(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> torch.Tensor:
    """The rho-spaced noise levels t_0 > … > t_{N-1}, followed by t_N = 0 (float64)."""
    i = torch.arange(num_steps, dtype=torch.float64)
    t = (sigma_max ** (1 / rho) + i / max(num_steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_sample(denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], latents: torch.Tensor,
                num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
                rho: float = 7.0) -> torch.Tensor:
    """Integrate the probability-flow ODE from ``latents`` ~ N(0, I) scaled by sigma_max to sigma = 0."""
    steps = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho)
    x = latents.to(torch.float64) * steps[0]
    n = x.shape[0]

    def slope(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        denoised = denoiser(x.to(latents.dtype), t.to(latents.dtype).expand(n)).to(torch.float64)
        return (x - denoised) / t

    for t_cur, t_next in zip(steps[:-1], steps[1:]):
        d = slope(x, t_cur)
        x_next = x + (t_next - t_cur) * d
        if t_next > 0:
            x_next = x + (t_next - t_cur) * 0.5 * (d + slope(x_next, t_next))
        x = x_next
    return x.to(latents.dtype)
