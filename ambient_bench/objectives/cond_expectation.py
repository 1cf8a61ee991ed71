"""The conditional-expectation target of Lu, Wang, Bal ("Mathematical analysis of singularities in
the diffusion model under the submanifold assumption", 2023/2024; seed notes §4). Reconstruction from
the abstract (§4.2): for data on a lower-dimensional manifold the score blows up as 1/t near t = 0,
while f(X_t, t) = E[X0 | X_t] stays bounded; the network learns f with the weight λ(t) = 1/(e^t - 1).

In EDM units (OU time t ↔ sigma² = e^t - 1, x_sigma = e^{t/2}·X_t) f is the denoiser D(x; sigma) and
λ = 1/sigma², the signal-to-noise ratio: the loss equals in value the DDPM ε-loss ||ε̂ - ε||² with
ε̂ = (x_sigma - D)/sigma. The noise levels are the train section's (the paper's exponential OU-time
schedule corresponds to a log-uniform t; set P_mean / P_std, or see ``ou_time``). ``weight_cap``
clips λ near sigma = 0, where it is unbounded (§4.5).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ambient_bench.components import Objective, TrainBatch
from ambient_bench.params import Param
from ambient_bench.registry import register_objective


def ou_time(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """OU time t of EDM noise level sigma (dX = -X/2 dt + dW): t = ln(1 + sigma²)."""
    return torch.log1p(sigma ** 2) if isinstance(sigma, torch.Tensor) else math.log1p(sigma ** 2)


def edm_sigma(t: float | torch.Tensor) -> float | torch.Tensor:
    """EDM noise level of OU time t: sigma = sqrt(e^t - 1)."""
    return torch.expm1(t).sqrt() if isinstance(t, torch.Tensor) else math.sqrt(math.expm1(t))


@register_objective("cond_expectation")
class ConditionalExpectationLoss(Objective):
    """x0 (conditional-expectation) regression weighted by 1/sigma² (λ(t) = 1/(e^t - 1)), capped near 0."""

    version = 1
    edm_on_clean = False
    provenance = "reconstruction from the abstract (seed notes §4.2)"
    params = {"weight_cap": Param(1e4, "largest weight 1/sigma² (1e4: sigma below 0.01 is not weighted more)",
                                  gt=0)}

    def loss(self, denoiser: Callable[..., torch.Tensor], batch: TrainBatch) -> torch.Tensor:
        sigma = batch.sigma.float().to(batch.x0.device)
        s = sigma.reshape(-1, 1, 1, 1)
        weight = (1 / s ** 2).clamp(max=self.p.weight_cap)
        return (weight * (denoiser(batch.x0 + s * batch.eps, sigma) - batch.x0) ** 2).flatten(1).sum(1)
