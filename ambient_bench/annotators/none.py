"""Low-quality samples left out: for pools of clean target data plus out-of-distribution data
(the paper's Table 2(b)), where only sigma_max matters."""
from __future__ import annotations

from ambient_bench.components import Annotation, AnnotationContext, Annotator, MixedData
from ambient_bench.registry import register_annotator


@register_annotator("none")
class NoLowQuality(Annotator):
    """Low-quality samples are not used (dropped, and counted in the annotate summary)."""

    version = 1

    def annotate(self, data: MixedData, ann: Annotation, ctx: AnnotationContext | None) -> None:
        ann.keep[data.corrupted & ~data.ood] = False
