"""Bootstrapping Diffusion (Ma 2025, arXiv 2505.11825; seed notes §2), reconstruction from the abstract:
few full images plus many partial ones, each partial kind a *view* of the full data. Here the view is
f×f average pooling: the mix's ``pixelate`` corruption with the same factor keeps exactly the pooled
image (block means, up to the uint8 quantisation of the pool), so every pool image, clean or pixelated,
gives one low-resolution view.

Stages: a view model (EDM, at 1/f the resolution) trains on the views of every in-distribution image,
in its own train stage keyed by the mix and the factor only, so it is shared by every cell that differs
in ``lam`` or the objective; the residual network then trains on the full (clean) images alone, graded
through the composite denoiser (objective ``views_residual``), and samples with it.
"""
from __future__ import annotations

from typing import Any

import torch

from ambient_bench.components import Annotation, AnnotationContext, Method, MixedData, Slot
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import register_method


@register_method("bootstrap_views")
class BootstrapViews(Method):
    """Low-resolution views train their own model; the full images train the residual score."""

    version = 1
    provenance = "reconstruction from the abstract (seed notes §2.2–2.3)"
    params = {"factor": Param(2, "side of the average-pooling view (the mix's pixelate factor)", kind=int, ge=2)}
    slots = {"objective": Slot("objective", "views_residual", "training loss: views_residual (lam)")}
    test_corruption = {"name": "pixelate", "factor": 2}

    def view_models(self) -> list[dict[str, Any]]:
        return [{"factor": self.p.factor}]

    def check_mix(self, corruptions: list[dict[str, Any]]) -> None:
        for spec in corruptions:
            if (spec["name"], spec.get("factor")) != ("pixelate", self.p.factor):
                raise UserError(f"method 'bootstrap_views': needs low-resolution views made by pixelate with factor "
                                f"{self.p.factor}; mix.corruption '{spec['name']}' is not one (set method.factor to "
                                f"the pixelate factor, or use another method)")

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
