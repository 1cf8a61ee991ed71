"""Composition: several corruptions applied one after the other (e.g. blur, then a colour cast)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ambient_bench.components import Corruption
from ambient_bench.config.schema import ComponentList
from ambient_bench.params import Param
from ambient_bench.registry import CORRUPTIONS, register_corruption


def step_rngs(rngs: Sequence[np.random.Generator], steps: int) -> list[list[np.random.Generator]]:
    """``out[k][i]``: image i's generator for step k.

    One 63-bit root is drawn from each ``rngs[i]``; step k's generator is seeded by
    (root, k). So step k sees the same stream whatever the other steps are and however
    many numbers they draw, and adding a step at the end changes none of the others.
    """
    roots = [int(rng.integers(0, 2 ** 63)) for rng in rngs]
    return [[np.random.default_rng(np.random.SeedSequence([root, k])) for root in roots]
            for k in range(steps)]


@register_corruption("compose")
class Compose(Corruption):
    """Apply a list of corruptions in order, each with its own random stream per image.

    ``steps`` is a non-empty list of corruptions written like any corruption (a name or
    ``{name: ..., <params>}``) and validated like one. Value range, channels and device
    behaviour are those of the steps; the output is clamped to [0, 1] after every step.
    Image i's generator yields one draw (the root of ``step_rngs``), whatever the steps.

    Versioning: ``version`` is that of the composition logic only. A step's own version
    still reaches every stage key, because the key holds the semantic view of the steps,
    which for each step is ``{name, version, params}`` (``ComponentList.semantic``).
    """

    version = 1
    params = {"steps": Param(help="corruptions applied in order", kind=ComponentList("corruption"))}
    test_params = {"steps": [{"name": "gaussian_blur", "sigma": 0.6},
                             {"name": "color_shift", "strength": 0.1}]}
    # The class cannot know its steps: it says "may be random" and every instance says
    # whether its own steps are.
    random = True
    gallery = [
        {"steps": [{"name": "gaussian_blur", "sigma": s}, {"name": "color_shift", "strength": c},
                   {"name": "contrast", "factor": f}]}
        for s, c, f in ((0.4, 0.05, 0.9), (0.6, 0.1, 0.75), (0.8, 0.15, 0.6), (1.0, 0.2, 0.45))
    ]

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.steps = [CORRUPTIONS.build(spec) for spec in self.p.steps]
        self.random = any(step.random for step in self.steps)

    def apply(self, x: torch.Tensor, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        streams = step_rngs(rngs[:len(x)], len(self.steps))
        out = x
        for step, step_stream in zip(self.steps, streams):
            out = step.apply(out, step_stream).clamp(0, 1)
        return out if out is not x else x.clone()
