"""Bootstrapped score matching (Kumar, Nagaraj, Sarkar 2025, "Dimension-free Score Matching and Time
Bootstrapping for Diffusion Models"; seed notes §3). Reconstruction from the abstract: the paper's
exact loss (its §5 / App. G) was not retrieved; this is the identity the notes derive and check (§3.2).

Above ``sigma_boot`` the regression target at level sigma_t is built from the model's own prediction
at the lower level sigma_s = sigma_t / ``ratio`` on the same forward path, instead of from x0:

    x_s on the path of x_t (x_s | x_t, x0 is a Brownian bridge),
    target = x_t + (sigma_t² / sigma_s²)·(D̄(x_s; sigma_s) - x_s)        (D̄: the EMA teacher, no gradient)

With an exact D̄ its mean given x_t is E[x0 | x_t] (the VE form of the target score identity), and its
variance is far below that of x0 at moderate sigma (the notes' §3.3 table; tests/test_bsm.py). ``lam``
blends it with the plain target x0 (unbiased for any lam). Outside (``sigma_boot``, ``sigma_boot_max``):
EDM's loss. A bias of D̄ at sigma_s is copied into the target at sigma_t: errors compound over the hops;
and in VE units the target's own variance grows as sigma_t²·(ratio² - 1), while x0's stays bounded.
"""
from __future__ import annotations

from typing import Callable

import torch

from ambient_bench.components import Objective, TrainBatch
from ambient_bench.params import Param
from ambient_bench.registry import register_objective


@register_objective("bsm")
class BootstrappedScoreMatching(Objective):
    """EDM's loss with a target bootstrapped from the EMA model one level lower (above sigma_boot)."""

    version = 1
    edm_on_clean = False
    provenance = "reconstruction from the abstract (seed notes §3.2)"
    params = {
        "sigma_boot": Param(0.5, "levels above this use the bootstrapped target; below it plain DSM", gt=0),
        "sigma_boot_max": Param(float("inf"), "and only below this (in VE units the target's variance grows as "
                                              "sigma_t²·(ratio² - 1): plain DSM is the quieter target at high noise)",
                                gt=0, allow_inf=True),
        "ratio": Param(1.1, "sigma_t / sigma_s of the bootstrap step (close to 1: lower variance, more hops)",
                       gt=1),
        "lam": Param(1.0, "weight of the bootstrapped target against x0 (1 = bootstrap only)", ge=0, le=1),
    }

    def loss(self, denoiser: Callable[..., torch.Tensor], batch: TrainBatch) -> torch.Tensor:
        if batch.teacher is None:
            raise ValueError("bsm needs the training loop's EMA teacher (TrainBatch.teacher)")
        sigma = batch.sigma.float().to(batch.x0.device)
        s = sigma.reshape(-1, 1, 1, 1)
        x_t = batch.x0 + s * batch.eps
        target = batch.x0
        boot = (sigma > self.p.sigma_boot) & (sigma < self.p.sigma_boot_max)
        if bool(boot.any()):
            rows = torch.nonzero(boot).flatten()
            st, ss = s[rows], s[rows] / self.p.ratio
            x0, xt = batch.x0[rows], x_t[rows]
            share = ss ** 2 / st ** 2  # x_s | x_t, x0: mean x0 + share·(x_t - x0), variance σ_s²·(1 - share)
            x_s = x0 + share * (xt - x0) + ss * (1 - share).sqrt() * torch.randn_like(x0)
            bootstrapped = xt + (st ** 2 / ss ** 2) * (batch.teacher(x_s, ss.flatten(), rows=rows) - x_s)
            target = target.clone()
            target[rows] = self.p.lam * bootstrapped.to(target.dtype) + (1 - self.p.lam) * x0
        weight = (s ** 2 + batch.sigma_data ** 2) / (s * batch.sigma_data) ** 2
        return (weight * (denoiser(x_t, sigma) - target) ** 2).flatten(1).sum(1)
