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
    """Ambient-o with one fixed sigma_min for every corrupted sample (paper Table 7, 'single').

    A corrupted sample enters the loss only at sigma > b·sigma_min, through the ambient target
    of paper App. A; clean samples are used at every noise level with the plain EDM loss.
    """

    version = 1
    params = {
        "sigma_min": Param(help="annotation noise level of every corrupted sample", ge=0),
        "s_max": Param(4.0, "buffer: corrupted samples only where sigma²/(sigma²-sigma_min²) < "
                            "s_max (.inf = no buffer)", gt=1),
    }
    test_params = {"sigma_min": 1.0}

    def annotate(self, data: MixedData) -> Annotation:
        n = len(data.corrupted)
        sigma_min = torch.where(data.corrupted, torch.tensor(self.p.sigma_min), torch.tensor(0.0))
        return Annotation(keep=torch.ones(n, dtype=torch.bool), sigma_min=sigma_min.float(),
                          sigma_max=torch.zeros(n), buffer=buffer_factor(self.p.s_max))
