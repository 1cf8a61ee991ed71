"""The ambient loss of the paper (Eq. 3.5, App. A; Table 6's weight and buffer options): ``diffusion/loss.py``.

A sample annotated with sigma_min is trusted only after noise of that level is added to it
(x_tn = x0 + sigma_min·Z_i, Z_i fixed per image); above it the Tweedie-consistent target is used,
below it the sample counts as clean (sigma_n = 0: EDM's loss). Clean samples have sigma_min 0.
The buffer s_max keeps a low-quality sample out of the levels just above its sigma_min, where
lambda_amb explodes: it is used only where sigma²/(sigma² - sigma_min²) < s_max.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ambient_bench.components import Objective, TrainBatch
from ambient_bench.diffusion.loss import ambient_edm_loss, annotation_noise
from ambient_bench.params import Param
from ambient_bench.registry import register_objective


def buffer_factor(s_max: float) -> float:
    """b = sqrt(1 + 1/(s_max - 1)): sigma > b·sigma_min ⇔ sigma²/(sigma² - sigma_min²) < s_max."""
    return 1.0 if math.isinf(s_max) else math.sqrt(1.0 + 1.0 / (s_max - 1.0))


S_MAX = Param(4.0, "buffer: low-quality samples only where sigma²/(sigma²-sigma_min²) < s_max, i.e. sigma > "
                   "b·sigma_min with b = sqrt(1 + 1/(s_max-1)) (.inf = no buffer)", gt=1, allow_inf=True)


@register_objective("ambient")
class AmbientLoss(Objective):
    """lambda_EDM·min(lambda_amb, c)-weighted loss on the Tweedie target of x0 + sigma_min·Z_i."""

    version = 2
    params = {
        "s_max": S_MAX,
        "ambient_weight": Param("full", "loss weight of low-quality samples: full = lambda_amb = "
                                        "sigma⁴/(sigma²-sigma_min²)² (paper), none = 1", kind=str,
                                choices=("full", "none")),
        "weight_clip": Param(None, "clip lambda_amb at this value (Table 6: 2 or 4; null = no clip)", gt=1,
                             nullable=True),
    }

    @classmethod
    def check_params(cls, values: dict[str, Any]) -> tuple[str, str] | None:
        if values.get("ambient_weight") == "none" and values.get("weight_clip") is not None:
            return "weight_clip", "ambient_weight: none has no weight to clip; remove weight_clip"
        return None

    @classmethod
    def unused_params(cls, values: dict[str, Any]) -> dict[str, str]:
        return {"weight_clip": "ambient_weight: none"} if values.get("ambient_weight") == "none" else {}

    def buffer(self) -> float:
        return buffer_factor(self.p.s_max)

    def weight_clip(self) -> float:
        """c of min(lambda_amb, c) (see diffusion/loss.py): inf = the full weight, 1 = none."""
        if self.p.ambient_weight == "none":
            return 1.0
        return math.inf if self.p.weight_clip is None else float(self.p.weight_clip)

    def noisy_observation(self, batch: TrainBatch, sigma_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, Z) whose x0 + sigma_n·Z is x_tn: here the stored image plus its fixed draw."""
        return batch.x0, batch.z

    def loss(self, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             batch: TrainBatch) -> torch.Tensor:
        device = batch.x0.device
        sigma_n = annotation_noise(batch.sigma, batch.sigma_min)  # float64 on the CPU, then float32
        x0, z = self.noisy_observation(batch, sigma_n)
        return ambient_edm_loss(denoiser, x0, z, batch.sigma.float().to(device), sigma_n.float().to(device),
                                batch.eps, batch.sigma_data, weight_clip=self.weight_clip())
