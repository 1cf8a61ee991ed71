"""Noisy data at a known level (Daras et al. 2024, "Consistent Diffusion Meets Tweedie"; the
scaling laws of "How much is a noisy image worth?", 2025): the observation *is* x_tn.

An image carrying Gaussian noise of known std sigma_tn (its annotation sigma_min) is used only
at sigma > sigma_tn, with x_t = x_tn + sqrt(sigma² - sigma_tn²)·eps and the double-Tweedie
target (sigma²·x_tn - sigma_tn²·x_t)/(sigma² - sigma_tn²), whose expectation given x_t is
E[x0 | x_t]. No noise is added to the image: it already holds one fixed realisation (adding a
fresh draw each epoch would average the noise out and leak clean signal). Clean images
(sigma_tn = 0) get EDM's loss. The weight and its clipping are the ambient loss's.
"""
from __future__ import annotations

import torch

from ambient_bench.components import TrainBatch
from ambient_bench.objectives.ambient import AmbientLoss
from ambient_bench.registry import register_objective


@register_objective("ambient_tweedie")
class AmbientTweedieLoss(AmbientLoss):
    """The ambient loss with the noisy observation itself as x_tn (no added noise)."""

    version = 1

    def noisy_observation(self, batch: TrainBatch, sigma_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.x0, torch.zeros_like(batch.x0)
