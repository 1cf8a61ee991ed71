"""Ambient-o (Daras et al., 2025): low-quality samples used only at high noise levels.

``annotate`` chooses how each low-quality sample gets its sigma_min:

- ``fixed``: one value for every corrupted sample (paper Table 7, "single annotation");
- ``classifier``: a noise classifier trained by the harness, first crossing of its smoothed
  P(corrupted) below 0.5 + epsilon (paper §3.1, Fig. 2); samples that never cross are dropped;
- ``quality``: rank every in-distribution image by a quality score (CLIP-IQA in the paper), keep
  the top fraction clean and give the rest ``sigma_min``; the mixing's corrupted flags are not
  read, as with real data whose defects are unknown (paper §5, ImageNet);
- ``none``: low-quality samples are not used (they are dropped and counted); for pools of clean
  target data plus out-of-distribution data (paper Table 2(b)), where only sigma_max matters.

Out-of-distribution samples are used below ``ood_sigma_max`` (Table 2(b), "Fixed") and above
``ood_sigma_min``; ``ambient_o_crops`` annotates their sigma_max with crops classifiers.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ambient_bench.annotation.classifier_training import CLASSIFIER_SECTION, load_classifier
from ambient_bench.annotation.crops import scaled_table
from ambient_bench.components import (Annotation, AnnotationContext, ClassifierRequest, Method, MixedData,
                                      PoolSize)
from ambient_bench.data.images import uint8_to_model
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import register_method
from ambient_bench.training.loop import resolve_device

NOISE_CLASSIFIER = "noise"


def buffer_factor(s_max: float) -> float:
    """b = sqrt(1 + 1/(s_max - 1)): sigma > b·sigma_min ⇔ sigma²/(sigma² - sigma_min²) < s_max."""
    return 1.0 if math.isinf(s_max) else math.sqrt(1.0 + 1.0 / (s_max - 1.0))


def _sigma_table(value: Any) -> str | None:
    if not all(isinstance(k, int) and k >= 1 and isinstance(v, (int, float)) and v >= 0 for k, v in value.items()):
        return "expected a mapping {size in pixels (int ≥ 1): sigma (≥ 0)}"
    return None


@register_method("ambient_o")
class AmbientO(Method):
    """Ambient-o: corrupted samples only at sigma > b·sigma_min (fixed, classifier or quality annotation)."""

    version = 3
    params = {
        "annotate": Param("fixed", "how sigma_min is chosen: fixed, classifier or quality; none = low-quality "
                                   "samples unused (clean + out-of-distribution pools)", kind=str,
                          choices=("fixed", "classifier", "quality", "none")),
        "sigma_min": Param(None, "fixed: sigma_min of every corrupted sample; quality: of every image outside "
                                 "the top fraction", ge=0, nullable=True),
        "s_max": Param(4.0, "buffer: corrupted samples only where sigma²/(sigma²-sigma_min²) < s_max "
                            "(.inf = no buffer)", gt=1, allow_inf=True),
        # the loss ablations of the paper's Table 6 (with s_max above: the buffer)
        "ambient_weight": Param("full", "loss weight of corrupted samples: full = lambda_amb = "
                                        "sigma⁴/(sigma²-sigma_min²)² (paper), none = 1", kind=str,
                                choices=("full", "none")),
        "weight_clip": Param(None, "clip lambda_amb at this value (Table 6: 2 or 4; null = no clip)", gt=1,
                             nullable=True),
        "ood_sigma_max": Param(0.0, "out-of-distribution samples below this noise level (0 = unused)", ge=0),
        "ood_sigma_min": Param(float("inf"), "out-of-distribution samples also above this noise level "
                                             "(.inf = never)", ge=0),
        # classifier annotation (paper §3.1 and the official annotate.py)
        "classifier": Param({}, "noise classifier: architecture and training recipe", kind=CLASSIFIER_SECTION),
        "classifier_pool": Param("balanced", "what the noise classifier learns from: balanced (50/50 coin, "
                                             "paper) or diffusion (the training pool, App. D)",
                                 kind=str, choices=("balanced", "diffusion")),
        "num_sigmas": Param(2048, "noise levels in the annotation grid (log-normal quantiles)", kind=int, ge=2),
        "trials": Param(4, "noisy copies per image and level", kind=int, ge=1),
        "ema_span": Param(None, "span of the causal EMA in grid levels (null = the paper's 32 of 2048, "
                                "scaled to num_sigmas)", kind=int, ge=1, nullable=True),
        "epsilon": Param(0.05, "threshold: first level where smoothed P(corrupted) < 0.5 + epsilon", ge=0, lt=0.5),
        "max_dropped_fraction": Param(0.5, "the annotate stage fails when more than this share of the low-quality "
                                           "images never crosses the threshold (1 = allow dropping them all)",
                                      ge=0, le=1, semantic=False),
        "annotate_seed": Param(0, "seed of the annotation noise", kind=int, ge=0),
        "annotate_batch": Param(None, "classifier inputs per forward pass (null = sized to the device: the "
                                      "widest activation within 4 MiB on CPU, 512 MiB on GPU)",
                                kind=int, ge=1, nullable=True, semantic=False),
        "annotate_compile": Param(False, "torch.compile the classifier for annotation (about 1.7× on CPU; worth "
                                         "its compile time on large grids; needs a C++ compiler on CPU)",
                                  kind=bool, semantic=False),
        # quality-score annotation (paper §5, ImageNet)
        "quality_scorer": Param("clip_iqa", "quality score: clip_iqa (piq, the paper's), clip_iqa_pyiqa, "
                                            "laplacian_sharpness (offline)", kind=str),
        "quality_top_fraction": Param(0.1, "fraction of images ranked high quality (sigma_min 0)", gt=0, le=1),
        "quality_patch_sizes": Param([], "patch sizes whose mean patch score sets sigma_max ('+crops'); [] = off",
                                     kind=list, item=int),
        "quality_patch_top_fraction": Param(0.9, "fraction of images per patch size that get its sigma_max",
                                            gt=0, le=1),
        "quality_patch_table": Param(None, "patch size → sigma_max (null = the 64 px crop table scaled to the "
                                           "resolution)", kind=dict, nullable=True, check=_sigma_table),
        "quality_batch": Param(64, "images per scorer call", kind=int, ge=1, semantic=False),
    }
    test_params = {"sigma_min": 1.0, "ood_sigma_max": 0.1}

    @classmethod
    def check_params(cls, values: dict[str, Any]) -> tuple[str, str] | None:
        if values["annotate"] in ("fixed", "quality") and values["sigma_min"] is None:
            return "sigma_min", (f"annotate: {values['annotate']} needs sigma_min (the noise level of "
                                 f"low-quality samples)")
        if values["annotate"] in ("classifier", "none") and values["sigma_min"] is not None:
            return "sigma_min", (f"annotate: {values['annotate']} "
                                 + ("finds sigma_min per sample" if values["annotate"] == "classifier"
                                    else "uses no low-quality sample") + "; remove sigma_min")
        if values["ambient_weight"] == "none" and values["weight_clip"] is not None:
            return "weight_clip", "ambient_weight: none has no weight to clip; remove weight_clip"
        return None

    @classmethod
    def unused_params(cls, values: dict[str, Any]) -> dict[str, str]:
        by_annotation = {"classifier": ("classifier", "classifier_pool", "num_sigmas", "trials", "ema_span", "epsilon",
                                        "annotate_seed", "annotate_batch", "annotate_compile"),
                         "quality": tuple(name for name in cls.params if name.startswith("quality_"))}
        why = f"annotate: {values['annotate']}"
        unused = {name: why for annotate, names in by_annotation.items() if values["annotate"] != annotate
                  for name in names}
        if values["annotate"] == "quality" and not values["quality_patch_sizes"]:
            unused.update(dict.fromkeys(("quality_patch_top_fraction", "quality_patch_table"),
                                        "quality_patch_sizes: []"))
        if values["ambient_weight"] == "none":
            unused["weight_clip"] = "ambient_weight: none"
        return unused

    def check(self) -> None:
        if self.p.annotate == "quality":  # missing CLIP weights fail at plan time, not after the mixing
            from ambient_bench.annotation.quality import build_scorer

            build_scorer(self.p.quality_scorer)

    def classifiers(self, resolution: int | None) -> dict[str, ClassifierRequest]:
        if self.p.annotate != "classifier":
            return {}
        return {NOISE_CLASSIFIER: ClassifierRequest(self.p.classifier_pool, self.p.classifier)}

    def annotation_work(self, pool: PoolSize) -> dict[str, float]:
        if self.p.annotate == "classifier":  # every level of the grid, every noisy copy, every bad image
            return {"classifier_inputs": pool.low_quality * self.p.num_sigmas * self.p.trials}
        return {}

    def annotate(self, data: MixedData, ctx: AnnotationContext | None = None) -> Annotation:
        n = len(data.index)
        sigma_min = torch.zeros(n, dtype=torch.float64)
        sigma_max = torch.zeros(n, dtype=torch.float64)
        keep = torch.ones(n, dtype=torch.bool)
        columns: dict[str, torch.Tensor] = {}
        summary: dict[str, Any] = {"annotate": self.p.annotate}
        low = data.corrupted & ~data.ood
        if self.p.annotate == "fixed":
            sigma_min[low] = self.p.sigma_min
        elif self.p.annotate == "none":
            keep[low] = False
        elif self.p.annotate == "classifier":
            if ctx is None:
                raise ValueError("classifier annotation needs the harness's AnnotationContext")
            found = self._classifier_sigma_min(data, low, ctx, columns, summary)
            sigma_min[low] = torch.from_numpy(found)
            keep[low] = torch.from_numpy(np.isfinite(found))
        else:
            from ambient_bench.annotation.quality import build_scorer, high_quality_split, patch_scores, \
                patch_sigma_max

            inside = ~data.ood
            scorer = build_scorer(self.p.quality_scorer, device=str(resolve_device("auto")))
            scores = scorer.score(data.images[inside], batch=self.p.quality_batch)
            good = torch.from_numpy(high_quality_split(scores, self.p.quality_top_fraction))
            sigma_min[inside] = torch.where(good, 0.0, self.p.sigma_min).double()
            columns["quality_score"] = torch.full((n,), float("nan"), dtype=torch.float64)
            columns["quality_score"][inside] = torch.from_numpy(scores)
            truly_clean = ~data.corrupted[inside]
            summary["quality_split_precision"] = float(truly_clean[good].float().mean()) if good.any() else None
            if self.p.quality_patch_sizes:
                table = self.p.quality_patch_table or scaled_table(data.images.shape[-1])
                means = {k: patch_scores(scorer, data.images[inside], k, batch=self.p.quality_batch)
                         for k in sorted(self.p.quality_patch_sizes)}
                sigma_max[inside] = torch.from_numpy(patch_sigma_max(means, self.p.quality_patch_top_fraction,
                                                                     table))
        sigma_min[data.ood] = self.p.ood_sigma_min
        sigma_max[data.ood] = self.p.ood_sigma_max
        # an OOD sample usable nowhere is left out rather than carried as dead weight
        keep &= ~data.ood | (sigma_max > 0) | torch.isfinite(sigma_min)
        return Annotation(keep=keep, sigma_min=sigma_min.float(), sigma_max=sigma_max.float(),
                          buffer=buffer_factor(self.p.s_max), weight_clip=self.weight_clip(),
                          columns=columns, summary=summary)

    def weight_clip(self) -> float:
        """c of min(lambda_amb, c) in the loss (see diffusion/loss.py)."""
        if self.p.ambient_weight == "none":
            return 1.0
        return math.inf if self.p.weight_clip is None else float(self.p.weight_clip)

    def _classifier_sigma_min(self, data: MixedData, low: torch.Tensor, ctx: AnnotationContext,
                              columns: dict[str, torch.Tensor], summary: dict[str, Any]) -> np.ndarray:
        from ambient_bench.annotation.figures import plot_classifier_curves
        from ambient_bench.annotation.sigma_min import annotate_sigma_min

        device = resolve_device(ctx.device)
        classifier = load_classifier(ctx.classifiers[NOISE_CLASSIFIER], device)
        cfg = self.p.classifier
        result = annotate_sigma_min(classifier, uint8_to_model(data.images[low]).to(device), data.index[low],
                                    num_sigmas=self.p.num_sigmas, trials=self.p.trials, ema_span=self.p.ema_span,
                                    epsilon=self.p.epsilon, p_mean=cfg["P_mean"], p_std=cfg["P_std"],
                                    seed=self.p.annotate_seed, batch=self.p.annotate_batch,
                                    compile=self.p.annotate_compile)
        n = len(data.index)
        for name, values in (("p_lowest_sigma", result.smoothed[:, 0]), ("p_highest_sigma", result.smoothed[:, -1])):
            columns[name] = torch.full((n,), float("nan"), dtype=torch.float64)
            columns[name][low] = torch.from_numpy(values)
        crossed = np.isfinite(result.sigma_min)
        summary.update({"never_crossed": int((~crossed).sum()), "threshold": result.threshold,
                        "grid": [float(result.sigmas[0]), float(result.sigmas[-1]), len(result.sigmas)]})
        if len(result.sigma_min):
            picks = np.unique(np.linspace(0, len(result.sigma_min) - 1, num=min(6, len(result.sigma_min))).astype(int))
            plot_classifier_curves(ctx.workdir / "classifier_curves.png", result.sigmas, result.probabilities[picks],
                                   result.smoothed[picks], result.threshold, result.sigma_min[picks],
                                   labels=[f"image {int(i)}" for i in data.index[low][picks]],
                                   quality=ctx.classifier_quality.get(NOISE_CLASSIFIER))
        dropped = int((~crossed).sum())
        if dropped > self.p.max_dropped_fraction * len(crossed):  # Ambient-o would silently be clean-only
            raise UserError(f"ambient_o annotation drops {dropped:,} of {len(crossed):,} low-quality images (their "
                            f"smoothed P(corrupted) never falls below {result.threshold:.2f}; max_dropped_fraction "
                            f"{self.p.max_dropped_fraction:g}): the classifier finds them distinguishable at every "
                            f"noise level of the grid; train a better classifier, or set max_dropped_fraction: 1 to "
                            f"train without them")
        return result.sigma_min
