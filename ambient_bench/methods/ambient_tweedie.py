"""Noisy data at a known noise level (Daras, Dimakis, Daskalakis 2024; Daras, Cherapanamjeri,
Daskalakis 2025, "How much is a noisy image worth?"): seed notes §5.

Every low-quality image of the pool carries additive Gaussian noise whose level the method is
told, here read from the mix's ``gaussian_noise`` corruption (``sigma`` in [0, 1] pixel units is
2·sigma in the model's [-1, 1] units). Its annotation sigma_min is that level sigma_tn, and the
``ambient_tweedie`` objective uses the observation itself as x_tn at every sigma above it (with
the buffer of paper Eq. C.2 when ``s_max`` is finite). Clean images train at every level. Unlike
``ambient_o``, no noise is added and no classifier guesses the level: it is known exactly, so the
method applies to nothing else (blurred, JPEG-compressed or unlabelled low-quality images are an
error naming the corruption). Out-of-distribution images are not used.

The corruption clamps pixels to [0, 1] and the pool stores uint8 images: the noise is Gaussian
up to that clamp and a 1/255 quantisation, as it is in a real noisy photograph.
"""
from __future__ import annotations

from typing import Any

import torch

from ambient_bench.components import Annotation, AnnotationContext, Method, MixedData, Slot
from ambient_bench.errors import UserError
from ambient_bench.registry import register_method

NOISE = "gaussian_noise"  # the corruption whose level is known (model units: 2 × its sigma)


def known_noise_levels(data: MixedData, corruptions: list[dict[str, Any]]) -> torch.Tensor:
    """sigma_tn of every pool image in model units: 0 for clean ones, 2·sigma of its gaussian_noise."""
    levels = torch.zeros(len(data.index), dtype=torch.float64)
    low = data.corrupted & ~data.ood
    unknown = low & (data.corruption < 0)
    if unknown.any():
        raise UserError(f"ambient_tweedie needs the noise level of every low-quality image; {int(unknown.sum())} "
                        f"come from the data without a corruption of known level: add them through the mix's "
                        f"'{NOISE}' corruption")
    for k, spec in enumerate(corruptions):
        chosen = low & (data.corruption == k)
        if not chosen.any():
            continue
        if spec["name"] != NOISE:
            raise UserError(f"ambient_tweedie needs Gaussian noise of a known level; mix.corruption "
                            f"'{spec['name']}' is not '{NOISE}' (use ambient_o, whose classifier annotates "
                            f"any corruption)")
        levels[chosen] = 2.0 * float(spec["sigma"])
    return levels


def check_known_noise(corruptions: list[dict[str, Any]]) -> None:
    for spec in corruptions:
        if spec["name"] != NOISE:
            raise UserError(f"method 'ambient_tweedie': needs Gaussian noise of a known level; mix.corruption "
                            f"'{spec['name']}' is not '{NOISE}' (use ambient_o, whose classifier annotates any "
                            f"corruption)")


@register_method("ambient_tweedie")
class AmbientTweedie(Method):
    """Noisy images used above their known noise level (double-Tweedie target), clean ones everywhere."""

    version = 2
    slots = {"objective": Slot("objective", "ambient_tweedie", "training loss: ambient_tweedie (the observation "
                                                                "as x_tn; s_max, ambient_weight, weight_clip)")}
    test_corruption = {"name": NOISE, "sigma": 0.1}

    def check_mix(self, corruptions: list[dict[str, Any]]) -> None:
        check_known_noise(corruptions)

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        corruptions = ctx.corruptions if ctx is not None else []
        sigma_tn = known_noise_levels(data, corruptions)
        keep = ~data.ood
        low = data.corrupted & keep
        summary = {"sigma_tn": sorted({round(float(v), 6) for v in sigma_tn[low].unique()}) if low.any() else []}
        return Annotation(keep=keep, sigma_min=sigma_tn.float(), sigma_max=torch.zeros(len(keep)), summary=summary)
