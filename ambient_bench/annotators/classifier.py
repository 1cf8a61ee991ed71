"""sigma_min from a noise classifier trained by the harness (paper §3.1, Fig. 2; the official annotate.py):
the first noise level at which the classifier's smoothed P(corrupted) falls below 0.5 + epsilon.
Samples whose curve never crosses are dropped (``never_crossed: top`` keeps them at the grid's largest
level, as the official code does; ``grid: random`` draws the grid as it does)."""
from __future__ import annotations

import numpy as np
import torch

from ambient_bench.annotation.classifier_training import CLASSIFIER_SECTION, load_classifier
from ambient_bench.components import (Annotation, AnnotationContext, Annotator, ClassifierRequest, MixedData,
                                      PoolSize)
from ambient_bench.data.images import uint8_to_model
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import register_annotator
from ambient_bench.training.loop import resolve_device

NOISE_CLASSIFIER = "noise"


@register_annotator("classifier")
class ClassifierSigmaMin(Annotator):
    """Per-sample sigma_min where a noise classifier can no longer tell the sample from a clean one."""

    version = 1
    params = {
        "classifier": Param({}, "noise classifier: architecture and training recipe", kind=CLASSIFIER_SECTION),
        "classifier_pool": Param("balanced", "what the noise classifier learns from: balanced (50/50 coin, "
                                             "paper) or diffusion (the training pool, App. D)",
                                 kind=str, choices=("balanced", "diffusion")),
        "num_sigmas": Param(2048, "noise levels in the annotation grid", kind=int, ge=2),
        "grid": Param("quantile", "the grid: quantile (evenly spaced log-normal quantiles) or random (the official "
                                  "annotate.py's sorted log-normal draw seeded 42, on torch's CPU generator)",
                      kind=str, choices=("quantile", "random"), omit_default=True),
        "never_crossed": Param("drop", "samples whose curve never crosses the threshold: drop, or top = annotate "
                                       "them at the grid's largest sigma (the official code; used almost never)",
                               kind=str, choices=("drop", "top"), omit_default=True),
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
    }
    test_params = {"num_sigmas": 16, "trials": 1, "max_dropped_fraction": 1.0,
                   "classifier": {"duration_kimg": 0.032, "batch": 16, "model_channels": 8}}

    def classifiers(self, resolution: int | None) -> dict[str, ClassifierRequest]:
        return {NOISE_CLASSIFIER: ClassifierRequest(self.p.classifier_pool, self.p.classifier)}

    def annotation_work(self, pool: PoolSize) -> dict[str, float]:
        # every level of the grid, every noisy copy, every bad image
        return {"classifier_inputs": pool.low_quality * self.p.num_sigmas * self.p.trials}

    def annotate(self, data: MixedData, ann: Annotation, ctx: AnnotationContext | None) -> None:
        from ambient_bench.annotation.figures import plot_classifier_curves
        from ambient_bench.annotation.sigma_min import annotate_sigma_min, resolve_never_crossed

        if ctx is None:
            raise ValueError("classifier annotation needs the harness's AnnotationContext")
        low = data.corrupted & ~data.ood
        device = resolve_device(ctx.device)
        classifier = load_classifier(ctx.classifiers[NOISE_CLASSIFIER], device)
        cfg = self.p.classifier
        result = annotate_sigma_min(classifier, uint8_to_model(data.images[low]).to(device), data.index[low],
                                    num_sigmas=self.p.num_sigmas, trials=self.p.trials, ema_span=self.p.ema_span,
                                    epsilon=self.p.epsilon, p_mean=cfg["P_mean"], p_std=cfg["P_std"],
                                    seed=self.p.annotate_seed, batch=self.p.annotate_batch,
                                    compile=self.p.annotate_compile, grid=self.p.grid)
        n = len(data.index)
        for name, values in (("p_lowest_sigma", result.smoothed[:, 0]), ("p_highest_sigma", result.smoothed[:, -1])):
            ann.columns[name] = torch.full((n,), float("nan"), dtype=torch.float64)
            ann.columns[name][low] = torch.from_numpy(values)
        crossed = np.isfinite(result.sigma_min)
        ann.summary.update({"never_crossed": int((~crossed).sum()), "never_crossed_mode": self.p.never_crossed,
                            "threshold": result.threshold,
                            "grid": [float(result.sigmas[0]), float(result.sigmas[-1]), len(result.sigmas)]})
        if len(result.sigma_min):
            picks = np.unique(np.linspace(0, len(result.sigma_min) - 1, num=min(6, len(result.sigma_min))).astype(int))
            plot_classifier_curves(ctx.workdir / "classifier_curves.png", result.sigmas, result.probabilities[picks],
                                   result.smoothed[picks], result.threshold, result.sigma_min[picks],
                                   labels=[f"image {int(i)}" for i in data.index[low][picks]],
                                   quality=ctx.classifier_quality.get(NOISE_CLASSIFIER))
        self._check_dropped(crossed, result.threshold)
        sigma_min, keep = resolve_never_crossed(result.sigma_min, result.sigmas, self.p.never_crossed)
        ann.sigma_min[low] = torch.from_numpy(sigma_min).to(ann.sigma_min.dtype)
        ann.keep[low] = torch.from_numpy(keep)

    def _check_dropped(self, crossed: np.ndarray, threshold: float) -> None:
        dropped = int((~crossed).sum())
        # at the grid's top (never_crossed: top) a sample is as good as dropped: used only above ~b·20
        if dropped > self.p.max_dropped_fraction * len(crossed):  # Ambient-o would silently be clean-only
            where = "drops" if self.p.never_crossed == "drop" else "puts at the grid's largest sigma"
            raise UserError(f"ambient_o annotation {where} {dropped:,} of {len(crossed):,} low-quality images (their "
                            f"smoothed P(corrupted) never falls below {threshold:.2f}; max_dropped_fraction "
                            f"{self.p.max_dropped_fraction:g}): the classifier finds them distinguishable at every "
                            f"noise level of the grid; train a better classifier, or set max_dropped_fraction: 1 to "
                            f"train without them")

