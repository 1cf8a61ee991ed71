"""Two training-target variants from the seed notes that know nothing about the corruption: recipes of
the plain data use with their own objective (the objective's docstring has the method).

- ``bsm``: the clean images only, bootstrapped score matching (§3);
- ``cond_expectation``: every image, the conditional-expectation target of Lu, Wang, Bal (§4), meant for
  singular data (e.g. masked images whose missing pixels are exactly 0).
"""
from __future__ import annotations

import torch

from ambient_bench.components import Annotation, AnnotationContext, Method, MixedData, Slot
from ambient_bench.registry import register_method


@register_method("bsm")
class BootstrappedScoreMatchingMethod(Method):
    """The clean images, with a target bootstrapped from the EMA model one noise level lower (objective bsm)."""

    version = 1
    provenance = "reconstruction from the abstract (seed notes §3.2)"
    uses_bad_data = False
    slots = {"objective": Slot("objective", "bsm", "training loss: bsm (sigma_boot, ratio, lam)")}

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        n = len(data.corrupted)
        return Annotation(keep=~(data.corrupted | data.ood), sigma_min=torch.zeros(n), sigma_max=torch.zeros(n))


@register_method("cond_expectation")
class ConditionalExpectationMethod(Method):
    """Every image at every level, x0 regression weighted by 1/sigma² (objective cond_expectation)."""

    version = 1
    provenance = "reconstruction from the abstract (seed notes §4.2)"
    slots = {"objective": Slot("objective", "cond_expectation", "training loss: cond_expectation (weight_cap)")}

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        n = len(data.corrupted)
        return Annotation(keep=torch.ones(n, dtype=torch.bool), sigma_min=torch.zeros(n), sigma_max=torch.zeros(n))
