"""Ambient Diffusion (Daras, Shah, Dagan, Gollakota, Dimakis, Klivans 2023): no clean image needed,
every training image has pixels missing (seed notes §1).

The mask A of each image is the one the mix's ``pixel_mask`` (or ``box_mask``) corruption drew:
the corruption re-draws it from the image's own generator (``Corruption.dropped``). Clean images of
the pool have A = 1. The further corruption B ~ Bernoulli(1 − ``delta``) per pixel is drawn once
per image (seed, index), as the official code fixes it, or redrawn at every step (``redraw``);
Ã = A ⊙ B. The ``ambient_diffusion``
objective trains on them, and the model samples with the fixed-mask sampler (one mask of the
training survival rate, the mean of Ã, per generated image). Out-of-distribution images are not
used; a low-quality image with no mask (blur, noise, a user's folder) is an error.
"""
from __future__ import annotations

from typing import Any

import torch

from ambient_bench.components import Annotation, AnnotationContext, Method, MixedData, Slot
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import CORRUPTIONS, register_method
from ambient_bench.seeding import numpy_rng


def observed_masks(data: MixedData, corruptions: list[dict[str, Any]], mix_seed: int) -> torch.Tensor:
    """A of every pool image, N×1×H×W bool: the pixels its corruption kept (all of a clean image's)."""
    n, _, h, w = data.images.shape
    masks = torch.ones((n, 1, h, w), dtype=torch.bool)
    built = [CORRUPTIONS.build(spec) for spec in corruptions]
    low = data.corrupted & ~data.ood
    for row in torch.nonzero(low).flatten().tolist():
        which = int(data.corruption[row])
        dropped = built[which].dropped(numpy_rng("corruption", mix_seed, int(data.index[row])), h, w) \
            if which >= 0 else None
        if dropped is None:
            what = f"mix.corruption '{corruptions[which]['name']}'" if which >= 0 else "a low-quality image of the data"
            raise UserError(f"ambient_diffusion needs to know which pixels each image lacks; {what} removes no "
                            f"pixels (use pixel_mask or box_mask, or another method)")
        masks[row, 0] = torch.from_numpy(~dropped)
    return masks


@register_method("ambient_diffusion")
class AmbientDiffusion(Method):
    """Masked images only: predict the further-masked pixels (Ã = A ⊙ B) from the rest, loss on A."""

    version = 2
    slots = {"objective": Slot("objective", "ambient_diffusion", "training loss: ambient_diffusion (masked "
                                                                  "input, loss on the observed pixels)")}
    params = {
        "delta": Param(0.1, "probability that an observed pixel is hidden again (B ~ Bernoulli(1 − delta)); "
                            "delta = 0 leaves the missing pixels unsupervised", ge=0, lt=1),
        "seed": Param(0, "seed of the further masks B (one per image, fixed for the whole training)", kind=int, ge=0),
        "redraw": Param(False, "draw B afresh at every training step (from the step's seeded generator) instead "
                               "of once per image as the official code does", kind=bool),
    }
    test_params = {"delta": 0.2}
    test_corruption = {"name": "pixel_mask", "fraction": 0.4}

    def check_mix(self, corruptions: list[dict[str, Any]]) -> None:
        for spec in corruptions:
            if CORRUPTIONS.build(spec).dropped(numpy_rng("check", 0), 2, 2) is None:
                raise UserError(f"method 'ambient_diffusion': needs to know which pixels each image lacks; "
                                f"mix.corruption '{spec['name']}' removes no pixels (use pixel_mask or box_mask, "
                                f"or another method)")

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        observed = observed_masks(data, ctx.corruptions if ctx else [], ctx.mix_seed if ctx else 0)
        _, _, h, w = observed.shape
        kept = torch.stack([torch.from_numpy(numpy_rng("ambient-diffusion-B", self.p.seed, int(i)).random((1, h, w))
                                             >= self.p.delta) for i in data.index.tolist()]) \
            if len(data.index) else observed.clone()
        seen = observed & kept
        keep = ~data.ood
        n = len(keep)
        return Annotation(keep=keep, sigma_min=torch.zeros(n), sigma_max=torch.zeros(n),
                          view={"mask": observed, "mask_tilde": seen,
                                **({"delta": torch.full((n,), self.p.delta)} if self.p.redraw else {})},
                          summary={"observed_fraction": float(observed[keep].float().mean()) if keep.any() else None,
                                   "survival": float(seen[keep].float().mean()) if keep.any() else None})

    def sampler(self, annotation: Annotation) -> dict[str, Any]:
        seen = annotation.view["mask_tilde"][annotation.keep]
        return {"name": "fixed_mask", "survival": float(seen.float().mean()) if len(seen) else 1.0}
