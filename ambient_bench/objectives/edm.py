"""EDM's denoising loss (Karras et al. 2022): every sample is trusted at every noise level."""
from __future__ import annotations

from typing import Callable

import torch

from ambient_bench.components import Objective, TrainBatch
from ambient_bench.registry import register_objective


@register_objective("edm")
class EDMLoss(Objective):
    """lambda(sigma)·||D(x0 + sigma·eps, sigma) - x0||², lambda = (sigma² + sd²)/(sigma·sd)²."""

    version = 1

    def loss(self, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             batch: TrainBatch) -> torch.Tensor:
        sigma = batch.sigma.float().to(batch.x0.device)
        s = sigma.reshape(-1, 1, 1, 1)
        weight = (s ** 2 + batch.sigma_data ** 2) / (s * batch.sigma_data) ** 2
        return (weight * (denoiser(batch.x0 + s * batch.eps, sigma) - batch.x0) ** 2).flatten(1).sum(1)
