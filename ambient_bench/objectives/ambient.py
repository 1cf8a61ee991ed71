"""The ambient loss of the paper (Eq. 3.5, App. A; Table 6's weight options): ``diffusion/loss.py``.

A sample annotated with sigma_min is trusted only after noise of that level is added to it
(x_tn = x0 + sigma_min·Z_i, Z_i fixed per image); above it the Tweedie-consistent target is used,
below it the sample counts as clean (sigma_n = 0: EDM's loss). Clean samples have sigma_min 0.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ambient_bench.components import Objective, TrainBatch
from ambient_bench.diffusion.loss import ambient_edm_loss, annotation_noise
from ambient_bench.params import Param
from ambient_bench.registry import register_objective


@register_objective("ambient")
class AmbientLoss(Objective):
    """lambda_EDM·min(lambda_amb, c)-weighted loss on the Tweedie target of x0 + sigma_min·Z_i."""

    version = 1
    params = {"weight_clip": Param(None, "c of min(lambda_amb, c): null = the paper's full weight, 1 = no "
                                         "weight, 2 or 4 = Table 6's clipped weights", gt=0, nullable=True)}

    def noisy_observation(self, batch: TrainBatch, sigma_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, Z) whose x0 + sigma_n·Z is x_tn: here the stored image plus its fixed draw."""
        return batch.x0, batch.z

    def loss(self, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             batch: TrainBatch) -> torch.Tensor:
        device = batch.x0.device
        sigma_n = annotation_noise(batch.sigma, batch.sigma_min)  # float64 on the CPU, then float32
        x0, z = self.noisy_observation(batch, sigma_n)
        clip = math.inf if self.p.weight_clip is None else float(self.p.weight_clip)
        return ambient_edm_loss(denoiser, x0, z, batch.sigma.float().to(device), sigma_n.float().to(device),
                                batch.eps, batch.sigma_data, weight_clip=clip)
