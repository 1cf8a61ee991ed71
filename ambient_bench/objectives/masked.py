"""Ambient Diffusion (Daras et al. 2023; seed notes §1): learning from masked images only.

Each training image is seen as y = A ⊙ x0 (A: its observed pixels). A further-corrupted mask
Ã = A ⊙ B (B ~ Bernoulli(1 − δ), fixed per image as in the official code) hides some observed
pixels from the network, whose input is [Ã ⊙ x_t, Ã] (2C channels; EDM's preconditioning acts
on all of them and the output is sliced to C); the loss is on every *observed* pixel:

    loss = lambda_EDM(sigma) · ||A ⊙ (D([Ã ⊙ x_t, Ã], sigma) − x0)||²,   x_t = x0 + sigma·eps.

Because Ã ⊂ A, the pixels of A outside Ã teach the network to predict pixels it cannot see,
and the minimiser is E[x0 | Ã x_t, Ã] on all pixels (for δ > 0). ``batch.view`` carries the
masks ``mask`` (A) and ``mask_tilde`` (Ã), N×1×H×W in {0, 1}; with ``delta`` (N) in the view, B is
drawn afresh on every call instead (the method's ``redraw`` option).
"""
from __future__ import annotations

from typing import Callable

import torch

from ambient_bench.components import Objective, TrainBatch
from ambient_bench.registry import register_objective


def masked_input(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[mask ⊙ x, mask] along channels: what a mask-conditioned network sees (2C channels)."""
    mask = mask.to(x.dtype).expand_as(x)
    return torch.cat([mask * x, mask], dim=1)


@register_objective("ambient_diffusion")
class AmbientDiffusionLoss(Objective):
    """EDM-weighted loss on the observed pixels A of a prediction from the further-masked Ã ⊙ x_t."""

    version = 1

    def input_channels(self, channels: int) -> int:
        return 2 * channels

    def loss(self, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             batch: TrainBatch) -> torch.Tensor:
        observed, seen = batch.view["mask"].to(batch.x0.dtype), batch.view["mask_tilde"].to(batch.x0.dtype)
        if "delta" in batch.view:  # B redrawn this step; the loop seeds torch's generator per (seed, rank, step)
            kept = torch.rand(observed.shape, device=observed.device) >= batch.view["delta"].reshape(-1, 1, 1, 1)
            seen = observed * kept.to(observed.dtype)
        sigma = batch.sigma.float().to(batch.x0.device)
        s = sigma.reshape(-1, 1, 1, 1)
        channels = batch.x0.shape[1]
        prediction = denoiser(masked_input(batch.x0 + s * batch.eps, seen), sigma)[:, :channels]
        weight = (s ** 2 + batch.sigma_data ** 2) / (s * batch.sigma_data) ** 2
        return (weight * (observed * (prediction - batch.x0)) ** 2).flatten(1).sum(1)
