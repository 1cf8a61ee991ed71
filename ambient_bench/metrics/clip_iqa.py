"""No-reference quality of generated samples: CLIP-IQA average and median (paper Table 5).

The paper scores each generated image with ``piq.CLIPIQA(data_range=1.0)`` (CLIP RN50,
P("Good photo.") against "Bad photo.", at the image's own resolution) and reports the average,
the median and the win-rate against the baseline on the same seeds. The scorers are the ones the
quality annotation uses (``annotation.quality``), so a missing CLIP file gives the same one-line
error there and here.

Every model samples image i from the same seed i, so the per-sample scores of two models line
up by index: ``per_sample()`` hands them to the evaluate stage, which stores them beside its
outputs, and result collection turns them into win-rates (``results.collect``).

Quantity names carry the scorer: ``clip_iqa_mean`` is only ever the paper's piq number;
pyiqa's variant gives ``clip_iqa_pyiqa_mean``, the offline stand-in ``laplacian_sharpness_mean``.
Numbers of different scorers are on different scales and must never share a table column.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ambient_bench.annotation.quality import LaplacianSharpness, PiqClipIqa, PyiqaClipIqa, QualityScorer, build_scorer
from ambient_bench.components import ImageSet, Metric
from ambient_bench.params import Param
from ambient_bench.registry import register_metric

SCORERS = (PiqClipIqa.name, PyiqaClipIqa.name, LaplacianSharpness.name)

# What each scorer computes, for the protocol (result rows and table footnotes).
DESCRIPTIONS = {
    PiqClipIqa.name: 'CLIP-IQA: CLIP RN50, softmax P("Good photo.") against "Bad photo.", data_range 1.0, '
                     "each sample at its generated resolution (no resize), grey samples repeated to RGB",
    PyiqaClipIqa.name: "pyiqa's clipiqa: CLIP RN50, 5 antonym prompt pairs averaged (not the paper's CLIP-IQA), "
                       "each sample at its generated resolution (no resize), grey samples repeated to RGB",
    LaplacianSharpness.name: "Laplacian sharpness (offline stand-in, not CLIP-IQA): variance of the 4-neighbour "
                             "Laplacian of the Rec.601 luma, 0..255 units",
}
PACKAGES = {PiqClipIqa.name: "piq", PyiqaClipIqa.name: "pyiqa"}


def _package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


@register_metric("clip_iqa")
class ClipIQA(Metric):
    """Per-sample no-reference quality (CLIP-IQA as in piq by default): average and median."""

    version = 1
    higher_is_better = True
    params = {
        "scorer": Param(PiqClipIqa.name, "clip_iqa (piq, the paper's), clip_iqa_pyiqa (pyiqa's 5-prompt variant) "
                                         "or laplacian_sharpness (offline, no weights)", kind=str, choices=SCORERS),
        "batch": Param(32, "images per scorer call", kind=int, ge=1, semantic=False),
        "device": Param("cpu", "torch device of the scorer (cpu, cuda, cuda:1, ...)", kind=str, semantic=False),
    }
    test_params = {"scorer": LaplacianSharpness.name}

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._scorer: QualityScorer | None = None
        self._per_sample: dict[str, np.ndarray] = {}

    def scorer(self) -> QualityScorer:
        # built once per instance: loading CLIP takes a second or two
        if self._scorer is None:
            self._scorer = build_scorer(self.p.scorer, device=self.p.device)
        return self._scorer

    def check(self) -> None:
        # building the scorer is the check: the scorers raise a one-line UserError that names the
        # missing files, their URLs and the folder they are read from
        self.scorer()

    def compute(self, samples: torch.Tensor, reference: ImageSet, setup_dir: Path,
                cache_dir: Path) -> dict[str, float]:
        scores = self.scorer().score(samples, batch=self.p.batch)
        prefix = self.p.scorer  # quantities are named after what measured them
        self._per_sample = {prefix: scores}
        return {f"{prefix}_mean": float(np.mean(scores)), f"{prefix}_median": float(np.median(scores))}

    def per_sample(self) -> dict[str, np.ndarray]:
        """Scores of the last ``compute`` call, sample i at index i (name → float64 array)."""
        return dict(self._per_sample)

    def protocol(self) -> dict[str, Any]:
        package = PACKAGES.get(self.p.scorer)
        implementation = (f"{package} {_package_version(package)}" if package
                          else "ambient_bench.annotation.quality (torch)")
        info: dict[str, Any] = {"scorer": self.p.scorer, "feature_extractor": DESCRIPTIONS[self.p.scorer],
                                "implementation": implementation, "resolution": "as generated (no resize)"}
        if self.p.scorer == PiqClipIqa.name:
            info.update(prompts=["Good photo.", "Bad photo."], data_range=1.0, backbone="CLIP RN50")
        return info
