"""How good a trained classifier is, on images it never saw, and the gate a noise classifier must pass.

The classifier stage holds out a fixed fraction of its pool (a coin per pool index; ``holdout_fraction``
0: none, and the images below are a 10% coin of its training images, ``in_sample`` in the result) and,
after training, scores those images at a dozen noise levels (evenly spaced quantiles of the training
log-normal, ``trials`` noisy copies each; crops classifiers on random zero-padded windows, as in
training): ROC-AUC and balanced accuracy per level. Both are independent of the class ratio, as the
class-balanced training objective makes the output itself (see classifier_training.py).

A noise classifier whose held-out AUC at the lowest levels is below ``min_auc`` cannot say which
images are low quality where it matters most; every annotation it gave would be noise (at the
base rate it would drop every image: Ambient-o silently becomes the clean-only model), so its
stage fails with one line. Crops classifiers are measured but not gated: near-chance AUC at small
crops is what they exist to find (the distributions agree at that scale).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ambient_bench.annotation.crops import window_mask
from ambient_bench.annotation.sigma_min import auto_batch, lognormal_grid
from ambient_bench.errors import UserError
from ambient_bench.seeding import numpy_rng, torch_generator

LEVELS = 12       # noise levels at which the held-out images are scored
LOW_LEVELS = 3    # the lowest ones: the gate's AUC is their mean
TRIALS = 4        # noisy copies per image and level


IN_SAMPLE_FRACTION = 0.1  # holdout_fraction 0: the share of the training images the measurement scores


def holdout_mask(indices: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Bool per image: held out of training (a coin per pool index, so it never depends on the order)."""
    coins = np.array([numpy_rng("classifier-holdout", seed, int(i)).random() for i in indices.tolist()])
    return torch.from_numpy(coins < fraction)


def split(indices: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(held out of training, measured): the same images, or with ``fraction`` 0 none held out and the
    measurement in-sample on the images the same coin at IN_SAMPLE_FRACTION picks (the paper trains its
    classifiers on their whole pool; an in-sample AUC can only flatter, so the min_auc gate still fails a
    classifier that learnt nothing, but no longer one that only memorised)."""
    if fraction > 0:
        held = holdout_mask(indices, fraction, seed)
        return held, held
    return torch.zeros(len(indices), dtype=torch.bool), holdout_mask(indices, IN_SAMPLE_FRACTION, seed)


@torch.no_grad()
def measure(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, p_mean: float, p_std: float,
            seed: int, crop_size: int | None = None) -> dict[str, Any]:
    """ROC-AUC and balanced accuracy of ``classifier`` on model-space ``images`` per noise level."""
    sigmas = lognormal_grid(LEVELS, p_mean, p_std)
    y = np.repeat(labels.numpy().astype(int), TRIALS)
    both = 0 < y.sum() < len(y)
    device = images.device
    n, shape = len(images), tuple(images.shape[1:])
    batch = auto_batch(classifier, shape, device)
    auc, accuracy = [], []
    for level, sigma in enumerate(sigmas):
        eps = torch.randn((n, TRIALS, *shape), generator=torch_generator("classifier-quality", seed, level),
                          device=device)
        x = (images[:, None] + float(sigma) * eps).reshape(-1, *shape)
        if crop_size is not None:
            top, left = np.random.default_rng([seed, level]).integers(0, shape[-1] - crop_size + 1, size=(2, len(x)))
            x = x * window_mask(shape[-1], crop_size, torch.from_numpy(top), torch.from_numpy(left)).to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        s = torch.full((len(x),), float(sigma), device=device)
        p = torch.cat([torch.sigmoid(classifier(x[i:i + batch], s[i:i + batch]).float())
                       for i in range(0, len(x), batch)]).cpu().numpy()
        auc.append(float(roc_auc_score(y, p)) if both else None)
        rates = [float(((p > 0.5) == bool(c))[y == c].mean()) for c in (0, 1) if (y == c).any()]
        accuracy.append(float(np.mean(rates)))
    low = [a for a in auc[:LOW_LEVELS] if a is not None]
    return {"sigmas": [float(s) for s in sigmas], "auc": auc, "balanced_accuracy": accuracy,
            "holdout_images": n, "holdout_positive": int(labels.sum()), "trials": TRIALS,
            "auc_low": float(np.mean(low)) if low else None, "low_sigma_max": float(sigmas[LOW_LEVELS - 1])}


def check(quality: dict[str, Any], min_auc: float, what: str) -> None:
    """Fail a noise classifier that cannot tell its classes apart at the lowest noise levels."""
    auc = quality["auc_low"]
    if auc is None or auc >= min_auc:
        return
    scored = "in-sample" if quality.get("in_sample") else "held-out"
    raise UserError(f"{what}: {scored} ROC-AUC {auc:.2f} at σ ≤ {quality['low_sigma_max']:.2g} (min_auc {min_auc:g}, "
                    f"{quality['holdout_images']} images scored): it cannot tell the low-quality images from the "
                    f"clean ones, so every annotation would be noise; train it longer (classifier.duration_kimg), "
                    f"make it larger (classifier.model_channels or preset), or check that the good and bad images "
                    f"really differ")
