"""Noisy data at a known level (Daras et al. 2024, "Consistent Diffusion Meets Tweedie"; the
scaling laws of "How much is a noisy image worth?", 2025): the observation *is* x_tn.

An image carrying Gaussian noise of known std sigma_tn (its annotation sigma_min) is used only
at sigma > sigma_tn, with x_t = x_tn + sqrt(sigma² - sigma_tn²)·eps and the double-Tweedie
target (sigma²·x_tn - sigma_tn²·x_t)/(sigma² - sigma_tn²), whose expectation given x_t is
E[x0 | x_t]. No noise is added to the image: it already holds one fixed realisation (adding a
fresh draw each epoch would average the noise out and leak clean signal). Clean images
(sigma_tn = 0) get EDM's loss. The weight and its clipping are the ambient loss's.

Below sigma_tn a noisy image teaches nothing directly. The optional consistency loss (seed notes
§5.4) asks the network to agree with itself there: D(x_c; sigma_c) = E[D(x'; sigma')] over its own
reverse trajectories from (x_c, sigma_c) down to sigma' < sigma_c. Our version, reconstructed from
the notes' summary of the laws code rather than from the code: x_c comes from ``consistency_steps``
ancestral steps of the model from the observation x_tn down to sigma_c (log-uniform below sigma_tn);
``consistency_paths`` independent paths of as many steps continue to sigma' (log-uniform below
sigma_c); their mean prediction, without gradient, is the target of an unweighted squared error
(the laws defaults with_weight=False; its with_grad=True differentiates the paths too, which we
do not). Ancestral step on the VE process: x' = x + (1 - r)(D(x; s) - x) + s'·sqrt(1 - r)·z,
r = s'²/s², exact in mean for any data (Tweedie), so an exact denoiser is consistent.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ambient_bench.components import TrainBatch
from ambient_bench.objectives.ambient import AmbientLoss
from ambient_bench.params import Param
from ambient_bench.registry import register_objective

Denoiser = Callable[..., torch.Tensor]


def ancestral(denoiser: Denoiser, x: torch.Tensor, sigma_from: torch.Tensor, sigma_to: torch.Tensor,
              rows: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` ancestral steps per row, geometric in sigma from ``sigma_from`` to ``sigma_to`` ([M] each)."""
    for k in range(steps):
        s = sigma_from * (sigma_to / sigma_from) ** (k / steps)
        s_next = sigma_from * (sigma_to / sigma_from) ** ((k + 1) / steps)
        shrink = (1 - (s_next / s) ** 2).reshape(-1, 1, 1, 1)
        x = x + shrink * (denoiser(x, s, rows=rows) - x) + s_next.reshape(-1, 1, 1, 1) * shrink.sqrt() \
            * torch.randn_like(x)
    return x


def log_uniform_below(upper: torch.Tensor, lower: float) -> torch.Tensor:
    u = torch.rand(upper.shape, device=upper.device)
    return torch.exp(math.log(lower) + u * (torch.log(upper) - math.log(lower)))


@register_objective("ambient_tweedie")
class AmbientTweedieLoss(AmbientLoss):
    """The ambient loss with the noisy observation itself as x_tn (no added noise); optional consistency below it."""

    version = 1
    params = {
        **AmbientLoss.params,
        "consistency_coeff": Param(0.0, "weight of the consistency loss below sigma_tn (seed notes §5.4; 0 = off, "
                                        "the laws default)", ge=0),
        "consistency_steps": Param(6, "ancestral steps to sigma_c, and along each path", kind=int, ge=1),
        "consistency_paths": Param(6, "independent paths whose mean prediction is the target", kind=int, ge=1),
        "consistency_batch": Param(32, "noisy samples per step that get the consistency loss", kind=int, ge=1),
        "consistency_sigma_min": Param(0.002, "lowest noise level of sigma_c and sigma'", gt=0),
    }

    @classmethod
    def unused_params(cls, values: dict[str, Any]) -> dict[str, str]:
        unused = super().unused_params(values)
        if not values.get("consistency_coeff"):
            unused.update({name: "consistency_coeff: 0" for name in cls.params
                           if name.startswith("consistency_") and name != "consistency_coeff"})
        return unused

    def noisy_observation(self, batch: TrainBatch, sigma_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.x0, torch.zeros_like(batch.x0)

    def loss(self, denoiser: Denoiser, batch: TrainBatch) -> torch.Tensor:
        noisy = torch.nonzero(batch.sigma_min > self.p.consistency_sigma_min).flatten()[:self.p.consistency_batch]
        if not self.p.consistency_coeff or not len(noisy):
            return super().loss(denoiser, batch)
        noisy = noisy.to(batch.x0.device)
        x_c, sigma_c, target = self.consistency_target(denoiser, batch, noisy)
        n, joint_out = len(batch.x0), {}

        def joint(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # one network call for both terms
            out = denoiser(torch.cat([x, x_c]), torch.cat([sigma, sigma_c]),
                           rows=torch.cat([torch.arange(n, device=noisy.device), noisy]))
            joint_out["consistency"] = out[n:]
            return out[:n]

        per_sample = super().loss(joint, batch)
        consistency = ((joint_out["consistency"] - target) ** 2).flatten(1).sum(1)
        return per_sample.index_add(0, noisy, self.p.consistency_coeff * consistency.to(per_sample.dtype))

    @torch.no_grad()
    def consistency_target(self, denoiser: Denoiser, batch: TrainBatch,
                           rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_c, sigma_c, mean over paths of D(x'; sigma')) for the batch samples ``rows``."""
        steps, paths, lowest = self.p.consistency_steps, self.p.consistency_paths, self.p.consistency_sigma_min
        sigma_tn = batch.sigma_min[rows.cpu()].float().to(batch.x0.device)
        sigma_c = log_uniform_below(sigma_tn, lowest)
        x_c = ancestral(denoiser, batch.x0[rows], sigma_tn, sigma_c, rows, steps)
        sigma_p = log_uniform_below(sigma_c, lowest).repeat(paths)
        rows_p = rows.repeat(paths)
        x_p = ancestral(denoiser, x_c.repeat(paths, 1, 1, 1), sigma_c.repeat(paths), sigma_p, rows_p, steps)
        predictions = denoiser(x_p, sigma_p, rows=rows_p)
        return x_c, sigma_c, predictions.reshape(paths, len(rows), *predictions.shape[1:]).mean(0)
