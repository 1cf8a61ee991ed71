"""Ambient-o (Daras et al., 2025): low-quality samples used only at high noise levels."""
from __future__ import annotations

import math

import torch

from ambient_bench.components import Annotation, Method, MixedData
from ambient_bench.params import Param
from ambient_bench.registry import register_method


def buffer_factor(s_max: float) -> float:
    """b = sqrt(1 + 1/(s_max - 1)): sigma > b·sigma_min ⇔ sigma²/(sigma² - sigma_min²) < s_max."""
    return 1.0 if math.isinf(s_max) else math.sqrt(1.0 + 1.0 / (s_max - 1.0))


@register_method("ambient_o")
class AmbientO(Method):
    """Ambient-o with fixed annotations: one sigma_min for corrupted, one sigma_max for OOD samples.

    A corrupted sample enters the loss only at sigma > b·sigma_min, through the ambient target
    of paper App. A (paper Table 7, 'single annotation'); an out-of-distribution sample only at
    sigma < sigma_max, as a clean sample (Table 2(b), 'Fixed'); clean samples everywhere.
    """

    version = 1
    params = {
        "sigma_min": Param(help="annotation noise level of every corrupted sample", ge=0),
        "s_max": Param(4.0, "buffer: corrupted samples only where sigma²/(sigma²-sigma_min²) < "
                            "s_max (.inf = no buffer)", gt=1),
        "ood_sigma_max": Param(0.0, "out-of-distribution samples only below this noise level (0 = unused)", ge=0),
    }
    test_params = {"sigma_min": 1.0, "ood_sigma_max": 0.1}

    def annotate(self, data: MixedData) -> Annotation:
        zero, inf = torch.tensor(0.0), torch.tensor(float("inf"))
        sigma_min = torch.where(data.ood, inf, torch.where(data.corrupted, torch.tensor(self.p.sigma_min), zero))
        sigma_max = torch.where(data.ood, torch.tensor(self.p.ood_sigma_max), zero)
        keep = ~data.ood | (self.p.ood_sigma_max > 0)
        return Annotation(keep=keep, sigma_min=sigma_min.float(), sigma_max=sigma_max.float(),
                          buffer=buffer_factor(self.p.s_max))
