"""The ambient EDM loss (paper Eq. 3.5 / App. A), which is the EDM loss when sigma_n = 0.

A sample annotated with sigma_min is only trusted after noise of level sigma_min has been
added to it, so at training level sigma > sigma_min the network is supervised towards the
Tweedie-consistent target built from x_tn = x0 + sigma_n Z (Z fixed per image):

    x_t    = x_tn + sqrt(sigma² - sigma_n²) · eps
    target = (sigma² · x_tn - sigma_n² · x_t) / (sigma² - sigma_n²)
    loss   = lambda_EDM(sigma) · ||D(x_t, sigma) - target||²,  lambda_EDM = (sigma² + sd²) / (sigma·sd)²

This equals lambda_EDM · lambda_amb · ||x̂_tn - x_tn||² with lambda_amb = sigma⁴/(sigma² - sigma_n²)²,
the weighted form of the paper; lambda_amb cancels the Tweedie step's α² (α = 1 - sigma_n²/sigma²).

The paper's Table 6 ablations replace lambda_amb by min(lambda_amb, c): c = inf is the full
weight, c = 1 no weight (the plain loss on x̂_tn), c = 2 or 4 the clipped weights. In the target
form that is a factor min(1, c·α²) on the per-sample loss.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def annotation_noise(sigma: torch.Tensor, sigma_min: torch.Tensor) -> torch.Tensor:
    """sigma_n = sigma_min where sigma > sigma_min, else 0 (the sample is used as clean)."""
    return torch.where(sigma > sigma_min, sigma_min, torch.zeros_like(sigma_min))


def ambient_edm_loss(denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     x0: torch.Tensor, z: torch.Tensor, sigma: torch.Tensor,
                     sigma_n: torch.Tensor, eps: torch.Tensor, sigma_data: float = 0.5,
                     weight_clip: float = math.inf) -> torch.Tensor:
    """Per-sample loss (sum over pixels); sigma and sigma_n have shape [N].

    ``weight_clip`` is c of min(lambda_amb, c): inf = the paper's weight, 1 = no weight.
    """
    s, sn = sigma.reshape(-1, 1, 1, 1), sigma_n.reshape(-1, 1, 1, 1)
    x_tn = x0 + sn * z
    x_t = x_tn + (s ** 2 - sn ** 2).sqrt() * eps
    target = (s ** 2 * x_tn - sn ** 2 * x_t) / (s ** 2 - sn ** 2)
    weight = (s ** 2 + sigma_data ** 2) / (s * sigma_data) ** 2
    if not math.isinf(weight_clip):
        alpha = 1 - sn ** 2 / s ** 2
        weight = weight * (weight_clip * alpha ** 2).clamp(max=1)
    return (weight * (denoiser(x_t, sigma) - target) ** 2).flatten(1).sum(1)
