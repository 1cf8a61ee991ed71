"""Out-of-distribution samples at fixed noise levels: below ``ood_sigma_max`` (the paper's Table 2(b),
"Fixed") and above ``ood_sigma_min``."""
from __future__ import annotations

import torch

from ambient_bench.components import Annotation, AnnotationContext, Annotator, MixedData
from ambient_bench.params import Param
from ambient_bench.registry import register_annotator


@register_annotator("ood_window")
class OODWindow(Annotator):
    """Every out-of-distribution sample used below one noise level (and optionally above another)."""

    version = 1
    role = "ood"
    params = {
        "ood_sigma_max": Param(0.0, "out-of-distribution samples below this noise level (0 = unused)", ge=0),
        "ood_sigma_min": Param(float("inf"), "out-of-distribution samples also above this noise level "
                                             "(.inf = never)", ge=0),
    }
    test_params = {"ood_sigma_max": 0.1}

    def annotate(self, data: MixedData, ann: Annotation, ctx: AnnotationContext | None) -> None:
        ann.sigma_min[data.ood] = self.p.ood_sigma_min
        ann.sigma_max[data.ood] = self.p.ood_sigma_max
        # an OOD sample usable nowhere is left out rather than carried as dead weight
        if self.p.ood_sigma_max <= 0 and not torch.isfinite(torch.tensor(self.p.ood_sigma_min)):
            ann.keep[data.ood] = False
