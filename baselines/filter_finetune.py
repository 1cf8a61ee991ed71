"""Baseline: train on all data, then fine-tune on the high-quality samples alone ('Filter + finetune')."""
from __future__ import annotations

from typing import Any

import torch

from ambient_bench import Annotation, AnnotationContext, Method, MixedData, Param, register_method


@register_method("filter_finetune")
class FilterFinetune(Method):
    """The all-data model (reused from the stage cache), fine-tuned on the clean samples only."""

    version = 1
    params = {
        "finetune_kimg": Param(help="fine-tuning length on the high-quality samples, in thousands of images", gt=0),
        "finetune_lr": Param(None, "fine-tuning learning rate (null = train.lr)", gt=0, nullable=True),
    }
    test_params = {"finetune_kimg": 0.032}

    def pretraining(self) -> tuple[dict[str, Any], dict[str, Any]]:
        overrides: dict[str, Any] = {"duration_kimg": self.p.finetune_kimg, "warmup_kimg": 0.0}
        if self.p.finetune_lr is not None:
            overrides["lr"] = self.p.finetune_lr
        objective = self.objective_spec()  # pretrained with the same loss it is fine-tuned with
        return {"name": "all_data", "objective": objective.pop("name"), **objective}, overrides

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        n = len(data.corrupted)
        return Annotation(keep=~(data.corrupted | data.ood), sigma_min=torch.zeros(n), sigma_max=torch.zeros(n))
