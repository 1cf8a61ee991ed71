"""Ambient-o + crops (paper §3.2, Table 2(b)): ``ambient_o`` whose out-of-distribution images get a
per-image sigma_max from crops classifiers (the ``crops`` annotator) instead of one fixed level.
Low-quality in-distribution images are annotated as in ``ambient_o``, so a pool of clean,
corrupted and OOD images gets sigma_min and sigma_max together.
"""
from __future__ import annotations

from ambient_bench.components import Slot
from ambient_bench.methods.ambient_o import AmbientO
from ambient_bench.registry import register_method


@register_method("ambient_o_crops")
class AmbientOCrops(AmbientO):
    """Ambient-o with crops classifiers: OOD samples only at sigma < their annotated sigma_max."""

    version = 2
    slots = {**AmbientO.slots,
             "ood_annotate": Slot("annotator", "crops", "sigma_max of out-of-distribution samples: crops or "
                                                        "ood_window", role="ood")}
    test_params = {"sigma_min": 1.0, "crop_sizes": [2, 4],
                   "crops_classifier": {"duration_kimg": 0.032, "batch": 16, "model_channels": 8}}
