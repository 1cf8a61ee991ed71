"""The low-resolution view: f×f average pooling (seed notes §2.2 item 4: queried at σ/f)."""
from __future__ import annotations

from typing import Any

import torch

from ambient_bench.components import MixedData, View
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import register_view


@register_view("pool")
class PoolView(View):
    """f×f average pooling. The mix's ``pixelate`` with the same factor keeps exactly the pooled image
    (block means, up to the pool's uint8 rounding), so every pool image, clean or pixelated, is one view."""

    version = 1
    params = {"factor": Param(2, "side of the average-pooling view (the mix's pixelate factor)", kind=int, ge=2)}
    test_params = {"factor": 2}
    test_corruption = {"name": "pixelate", "factor": 2}

    def spec(self) -> dict[str, Any]:
        return {"factor": self.p.factor}

    def describe(self) -> str:
        return f"{self.p.factor}×{self.p.factor} average pooling of every pool image"

    def check_mix(self, corruptions: list[dict[str, Any]]) -> None:
        for spec in corruptions:
            if (spec["name"], spec.get("factor")) != ("pixelate", self.p.factor):
                raise UserError(f"method 'bootstrap_views': needs low-resolution views made by pixelate with factor "
                                f"{self.p.factor}; mix.corruption '{spec['name']}' is not one (set method.factor to "
                                f"the pixelate factor, or use another method)")

    def training_set(self, data: MixedData, corruptions: list[dict[str, Any]], mix_seed: int) -> dict[str, Any]:
        keep = ~data.ood
        pooled = torch.nn.functional.avg_pool2d(data.images[keep].float(), self.p.factor)
        return {"images": pooled.round().clamp(0, 255).to(torch.uint8), "index": data.index[keep], "labels": None}
