"""The residual score of Bootstrapping Diffusion (Ma 2025; seed notes §2.3, reconstruction from the
abstract): frozen view models supply Σ_k V_kᵀ s_k(V_k x; σ_k), the network supplies the residual
r = (D_net - x)/σ², and EDM's loss grades the composite denoiser on the full images

    D(x; σ) = D_net(x; σ) + σ²·Σ_k V_kᵀ s_k(V_k x; σ_k),
    loss = λ_EDM(σ)·(||D(x_t; σ) - x0||² + lam·||σ²·r||²)

with the output-norm penalty lam shrinking r toward the views-only score (lam = 0: the network
learns everything the views miss; too large a lam forces their product, §2.6). The view models
reach the objective as ``batch.aux["views"]``: (operator, denoiser) pairs.
"""
from __future__ import annotations

from typing import Callable

import torch

from ambient_bench.components import Objective, TrainBatch
from ambient_bench.diffusion.views import composite_score
from ambient_bench.params import Param
from ambient_bench.registry import register_objective


@register_objective("views_residual")
class ViewsResidualLoss(Objective):
    """EDM's loss on the composite of frozen view models and the network's residual, plus lam·||σ²r||²."""

    version = 1
    edm_on_clean = False
    provenance = "reconstruction from the abstract (seed notes §2.3)"
    params = {"lam": Param(0.1, "output-norm penalty on the residual score (a sweep parameter)", ge=0)}

    def loss(self, denoiser: Callable[..., torch.Tensor], batch: TrainBatch) -> torch.Tensor:
        views = batch.aux.get("views") or []
        sigma = batch.sigma.float().to(batch.x0.device)
        s = sigma.reshape(-1, 1, 1, 1)
        x_t = batch.x0 + s * batch.eps
        own = denoiser(x_t, sigma)
        with torch.no_grad():
            from_views = s ** 2 * composite_score(x_t, sigma, views)
        weight = (s ** 2 + batch.sigma_data ** 2) / (s * batch.sigma_data) ** 2
        error = ((own + from_views - batch.x0) ** 2).flatten(1).sum(1)
        penalty = ((own - x_t) ** 2).flatten(1).sum(1)  # ||σ²·r||², r = (D_net - x)/σ²
        return weight.flatten() * (error + self.p.lam * penalty)
