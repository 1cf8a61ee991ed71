"""sigma_min from a quality score (the paper's §5, ImageNet): every in-distribution image is ranked by
the score (CLIP-IQA in the paper), the top fraction kept clean and the rest given ``sigma_min``. The
mixing's corrupted flags are not read, as with real data whose defects are unknown. "+crops": the
mean score of an image's patches sets its sigma_max."""
from __future__ import annotations

from typing import Any

import torch

from ambient_bench.annotation.crops import scaled_table
from ambient_bench.components import Annotation, AnnotationContext, Annotator, MixedData, PoolSize
from ambient_bench.params import Param
from ambient_bench.registry import register_annotator
from ambient_bench.training.loop import resolve_device


def sigma_table_problem(value: Any) -> str | None:
    """Param check of a {size in pixels: sigma} table."""
    if not all(isinstance(k, int) and k >= 1 and isinstance(v, (int, float)) and v >= 0 for k, v in value.items()):
        return "expected a mapping {size in pixels (int ≥ 1): sigma (≥ 0)}"
    return None


@register_annotator("quality")
class QualitySigmaMin(Annotator):
    """The top fraction by quality score clean, the rest used above sigma_min (+ patch sigma_max)."""

    version = 1
    params = {
        "sigma_min": Param(help="the noise level above which every image outside the top fraction is used", ge=0),
        "quality_scorer": Param("clip_iqa", "quality score: clip_iqa (piq, the paper's), clip_iqa_pyiqa, "
                                            "laplacian_sharpness (offline)", kind=str),
        "quality_top_fraction": Param(0.1, "fraction of images ranked high quality (sigma_min 0)", gt=0, le=1),
        "quality_patch_sizes": Param([], "patch sizes whose mean patch score sets sigma_max ('+crops'); [] = off",
                                     kind=list, item=int),
        "quality_patch_top_fraction": Param(0.9, "fraction of images per patch size that get its sigma_max",
                                            gt=0, le=1),
        "quality_patch_table": Param(None, "patch size → sigma_max (null = the 64 px crop table scaled to the "
                                           "resolution)", kind=dict, nullable=True, check=sigma_table_problem),
        "quality_batch": Param(64, "images per scorer call", kind=int, ge=1, semantic=False),
    }
    test_params = {"sigma_min": 1.0, "quality_scorer": "laplacian_sharpness"}

    @classmethod
    def unused_params(cls, values: dict[str, Any]) -> dict[str, str]:
        if values.get("quality_patch_sizes"):
            return {}
        return dict.fromkeys(("quality_patch_top_fraction", "quality_patch_table"), "quality_patch_sizes: []")

    def check(self) -> None:  # CLIP weights are fetched when run starts (a note in plan), not after the mixing
        from ambient_bench.annotation.quality import build_scorer

        build_scorer(self.p.quality_scorer)

    def annotation_work(self, pool: PoolSize) -> dict[str, float]:
        """CLIP's input pixels: every image at its size, then every patch (upsampled to CLIP's 224² when
        smaller, as ``patch_scores`` does); the offline scorer runs on the CPU (nothing notable)."""
        if not self.p.quality_scorer.startswith("clip") or pool.resolution is None:
            return {}
        from ambient_bench.annotation.quality import CLIP_INPUT

        side = pool.resolution
        pixels = side * side + sum((side // k) ** 2 * max(k, CLIP_INPUT) ** 2 for k in self.p.quality_patch_sizes)
        return {"clip_pixels": (pool.images - pool.ood) * pixels}

    def annotate(self, data: MixedData, ann: Annotation, ctx: AnnotationContext | None) -> None:
        from ambient_bench.annotation.quality import build_scorer, high_quality_split, patch_scores, patch_sigma_max

        inside = ~data.ood
        scorer = build_scorer(self.p.quality_scorer, device=str(resolve_device("auto")))
        scores = scorer.score(data.images[inside], batch=self.p.quality_batch)
        good = torch.from_numpy(high_quality_split(scores, self.p.quality_top_fraction))
        ann.sigma_min[inside] = torch.where(good, 0.0, self.p.sigma_min).to(ann.sigma_min.dtype)
        ann.columns["quality_score"] = torch.full((len(data.index),), float("nan"), dtype=torch.float64)
        ann.columns["quality_score"][inside] = torch.from_numpy(scores)
        truly_clean = ~data.corrupted[inside]
        ann.summary["quality_split_precision"] = float(truly_clean[good].float().mean()) if good.any() else None
        if self.p.quality_patch_sizes:
            table = self.p.quality_patch_table or scaled_table(data.images.shape[-1])
            means = {k: patch_scores(scorer, data.images[inside], k, batch=self.p.quality_batch)
                     for k in sorted(self.p.quality_patch_sizes)}
            ann.sigma_max[inside] = torch.from_numpy(patch_sigma_max(means, self.p.quality_patch_top_fraction,
                                                                     table)).to(ann.sigma_max.dtype)
