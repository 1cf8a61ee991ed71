"""Baseline: train on every sample as if it were clean."""
from __future__ import annotations

import torch

from ambient_bench import Annotation, AnnotationContext, Method, MixedData, register_method


@register_method("all_data")
class AllData(Method):
    """Every sample (clean, corrupted, out-of-distribution) alike at every noise level ('All data' rows)."""

    version = 1

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        n = len(data.corrupted)
        return Annotation(keep=torch.ones(n, dtype=torch.bool), sigma_min=torch.zeros(n),
                          sigma_max=torch.zeros(n))
