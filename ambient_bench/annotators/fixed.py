"""One sigma_min for every low-quality sample (the paper's Table 7, "single annotation")."""
from __future__ import annotations

from ambient_bench.components import Annotation, AnnotationContext, Annotator, MixedData
from ambient_bench.params import Param
from ambient_bench.registry import register_annotator


@register_annotator("fixed")
class FixedSigmaMin(Annotator):
    """Every low-quality sample used only above one noise level, sigma_min."""

    version = 1
    params = {"sigma_min": Param(help="the noise level above which every low-quality sample is used", ge=0)}
    test_params = {"sigma_min": 1.0}

    def annotate(self, data: MixedData, ann: Annotation, ctx: AnnotationContext | None) -> None:
        ann.sigma_min[data.corrupted & ~data.ood] = self.p.sigma_min
