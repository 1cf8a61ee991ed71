"""Disjoint crops: the cells of a grid×grid partition (seed notes §2.2 item 3: V Vᵀ = I, queried at σ).

With the cells covering the image, Σ_k V_kᵀ s_k is the score of the product of the cells' marginals;
the residual then carries exactly the dependence between cells (zero iff they are independent)."""
from __future__ import annotations

from typing import Any

import torch

from ambient_bench.components import MixedData, View
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import CORRUPTIONS, register_view
from ambient_bench.seeding import numpy_rng


@register_view("crops")
class CropsView(View):
    """grid² disjoint crops, one view model conditioned on the crop's position. A clean image gives all
    of its cells; an image of the mix's ``grid_crop`` (same grid) gives the one cell it kept."""

    version = 1
    params = {"grid": Param(2, "cells per side (the mix's grid_crop grid)", kind=int, ge=2)}
    test_params = {"grid": 2}
    test_corruption = {"name": "grid_crop", "grid": 2}

    def spec(self) -> dict[str, Any]:
        return {"grid": self.p.grid}

    def describe(self) -> str:
        return f"{self.p.grid}×{self.p.grid} disjoint crops of every pool image, position-conditioned"

    def label_dim(self) -> int:
        return self.p.grid ** 2

    def check_mix(self, corruptions: list[dict[str, Any]]) -> None:
        for spec in corruptions:
            if (spec["name"], spec.get("grid")) != ("grid_crop", self.p.grid):
                raise UserError(f"method 'bootstrap_views': needs crop views made by grid_crop with grid "
                                f"{self.p.grid}; mix.corruption '{spec['name']}' is not one (set method.grid to "
                                f"the grid_crop grid, or use another method)")

    def training_set(self, data: MixedData, corruptions: list[dict[str, Any]], mix_seed: int) -> dict[str, Any]:
        g = self.p.grid
        n, c, h, w = data.images.shape
        if h % g or w % g:
            raise UserError(f"view crops: the images ({h}×{w}) do not split into {g}×{g} equal cells; "
                            f"choose a grid dividing the resolution")
        cells = data.images.reshape(n, c, g, h // g, g, w // g).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, c,
                                                                                                  h // g, w // g)
        built = [CORRUPTIONS.build(spec) for spec in corruptions]
        rows, positions = [], []
        for row in torch.nonzero(~data.ood).flatten().tolist():
            which = int(data.corruption[row])
            if not bool(data.corrupted[row]):
                kept = range(g * g)
            elif which < 0:
                raise UserError("view crops: an image marked low quality by the data itself is not a known crop; "
                                "make the crops with the mix's grid_crop corruption")
            else:
                kept = [built[which].kept_cell(numpy_rng("corruption", mix_seed, int(data.index[row])))]
            rows += [row] * len(kept)
            positions += list(kept)
        rows_t, positions_t = torch.tensor(rows), torch.tensor(positions)
        return {"images": cells[rows_t, positions_t], "index": data.index[rows_t], "labels": positions_t}
