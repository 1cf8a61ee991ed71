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


def fixed_mask_denoiser(net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], masks: torch.Tensor,
                        channels: int, clip: bool = True) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Ambient Diffusion's sampler (seed notes §1.4): D(x; sigma) = clip(h([M ⊙ x, M]; sigma)) with one
    mask M (N×1×H×W, drawn at the training survival rate) per image for the whole trajectory, clipped
    to the image range [-1, 1] as the official sampler does. A heuristic: E[x0 | M x_t, M] is not
    E[x0 | x_t], so even an exact network shrinks the variance (tests/test_ambient_diffusion.py)."""
    from ambient_bench.objectives.masked import masked_input

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = net(masked_input(x, masks), sigma)[:, :channels]
        return out.clamp(-1, 1) if clip else out
    return denoise
