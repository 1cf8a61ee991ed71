"""Bootstrapping Diffusion (Ma 2025, arXiv 2505.11825; seed notes §2), reconstruction from the abstract:
few full images plus many partial ones, each partial kind a *view* of the full data. The ``view`` slot
says which (``list view``): ``pool`` (f×f average pooling; the mix's ``pixelate`` images) or ``crops``
(disjoint grid cells; the mix's ``grid_crop`` images).

Stages: a view model (EDM, at the view's resolution) trains on the views of every in-distribution
image, in its own train stage keyed by the mix and the view only, so it is shared by every cell that
differs in ``lam`` or the objective; the residual network then trains on the full (clean) images alone,
graded through the composite denoiser (objective ``views_residual``), and samples with it.
"""
from __future__ import annotations

from typing import Any

import torch

from ambient_bench.components import Annotation, AnnotationContext, Method, MixedData, Slot
from ambient_bench.errors import UserError
from ambient_bench.registry import register_method


@register_method("bootstrap_views")
class BootstrapViews(Method):
    """Partial views train their own model; the full images train the residual score."""

    version = 1
    provenance = "reconstruction from the abstract (seed notes §2.2–2.3)"
    slots = {"view": Slot("view", "pool", "the partial data's view of a full image (list view)"),
             "objective": Slot("objective", "views_residual", "training loss: views_residual (lam)")}
    test_corruption = {"name": "pixelate", "factor": 2}

    def view_models(self) -> list[dict[str, Any]]:
        view = self.components["view"]
        return [{"name": view.name, **view.values}]

    def check_mix(self, corruptions: list[dict[str, Any]]) -> None:
        self.components["view"].check_mix(corruptions)

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        self.check_mix(ctx.corruptions if ctx is not None else [])
        low = data.corrupted & ~data.ood
        if (low & (data.corruption < 0)).any():
            raise UserError("bootstrap_views needs to know how each low-quality image was made; images marked "
                            "low quality by the data itself are not views")
        n = len(data.index)
        # the residual trains on full images only: a view is never admissible there (its model is separate)
        return Annotation(keep=~data.ood, sigma_min=torch.where(low, float("inf"), 0.0), sigma_max=torch.zeros(n),
                          summary={"full_images": int((~data.corrupted & ~data.ood).sum()),
                                   "view_images": int((~data.ood).sum())})
