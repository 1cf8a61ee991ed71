"""Ambient-o (Daras et al., 2025): low-quality samples used only at high noise levels, out-of-distribution
samples only at low ones.

A recipe of three components, each chosen in the suite by name with its parameters beside them:

- ``annotate`` (sigma_min of the low-quality images): ``fixed`` (one value, the paper's Table 7),
  ``classifier`` (a noise classifier's crossing, §3.1), ``quality`` (a quality-score split, §5) or
  ``none`` (low-quality images unused, for clean + out-of-distribution pools, Table 2(b));
- ``ood_annotate`` (sigma_max of the out-of-distribution images): ``ood_window`` (fixed levels,
  Table 2(b) "Fixed") or ``crops`` (crops classifiers, §3.2; the default of ``ambient_o_crops``);
- ``objective``: ``ambient`` (the paper's loss with Table 6's weight and buffer options).

``list annotator`` and ``list objective`` show each component's parameters.
"""
from __future__ import annotations

from ambient_bench.components import Method, Slot
from ambient_bench.registry import register_method

LOW_QUALITY = Slot("annotator", "fixed", "sigma_min of low-quality samples: fixed, classifier, quality or none",
                   role="low_quality")
OUT_OF_DISTRIBUTION = Slot("annotator", "ood_window", "sigma_max of out-of-distribution samples: ood_window or "
                                                      "crops", role="ood")


@register_method("ambient_o")
class AmbientO(Method):
    """Ambient-o: low-quality samples only at sigma > b·sigma_min, OOD samples only at sigma < sigma_max."""

    version = 4
    slots = {"annotate": LOW_QUALITY, "ood_annotate": OUT_OF_DISTRIBUTION,
             "objective": Slot("objective", "ambient", "training loss (list objective)")}
    test_params = {"sigma_min": 1.0, "ood_sigma_max": 0.1}
