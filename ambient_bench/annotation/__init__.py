"""Annotation: per-sample noise levels at which a low-quality or out-of-distribution image is used.

    noise classifier (high noise) ─► sigma_min      crops classifier (low noise) ─► sigma_max
    quality scores (CLIP-IQA)     ─► high-quality split, patch sigma_max

Modules: ``classifier_net`` (the half U-Net), ``classifier_training`` (noise and crops
classifiers), ``sigma_min`` (batched crossing search), ``crops`` (tiles, K*, sigma_max table),
``context_probe`` (measures the crop-size → sigma table), ``quality`` (quality scores and the
true-rank split), ``figures`` (the paper's annotation figures).
"""
