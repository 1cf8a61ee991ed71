"""Baseline: train on the clean samples only, discarding every corrupted one."""
from __future__ import annotations

import torch

from ambient_bench import Annotation, AnnotationContext, Method, MixedData, register_method


@register_method("clean_only")
class CleanOnly(Method):
    """Only the clean fraction of the data ('Only clean' rows of the paper's tables)."""

    version = 1
    uses_bad_data = False  # one model serves every corruption level and OOD source of a suite

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        n = len(data.corrupted)
        return Annotation(keep=~(data.corrupted | data.ood), sigma_min=torch.zeros(n), sigma_max=torch.zeros(n))
