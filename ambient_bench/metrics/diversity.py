"""Diversity and memorisation of generated samples in a feature space.

``vendi``: the Vendi score (Friedman & Dieng 2023) of the generated set: exp of the Shannon entropy
of the eigenvalues of K/n, K the cosine-similarity kernel of the L2-normalised features (the
``vendi-score`` package's ``score_X``, q = 1). It is the "effective number of distinct samples":
1 for n copies of one image, n for n mutually orthogonal features. The paper's "DINO Vendi" is this
on DINOv2 features; it averaged per-prompt sets of text-to-image generations, whereas here the
whole sample set of a cell is one set.

``memorization``: for each generated sample the cosine distance (1 − cos) between its L2-normalised
feature and the nearest one among the reference images, i.e. the clean high-quality images of the
dataset, which are what the harness passes to ``compute`` as ``reference`` (the training images).
Cosine rather than L2 because DINOv2 feature norms vary between images while near-duplicates keep
their direction; on normalised features L2 = sqrt(2 · cosine distance), so nothing is lost.
``memorized_fraction`` is the fraction of samples nearer than ``threshold`` (default 0.05, i.e.
cosine similarity ≥ 0.95: a convention for near-duplicates, not a value from the paper).

Train/test comparison (the paper's "Train FID / Test FID" idea): the numbers here are against the
training images. A second evaluate whose dataset is a held-out split gives the test-side numbers;
memorisation shows as a gap between the two.

Both metrics take any torch-fidelity extractor (``features``); the default is the EDM2-style
DINOv2 ViT-L/14 of ``fd_dinov2``. ``pixels-avgpool8`` (registered here) needs no weights: an
offline fallback and the extractor of the contract tests, NOT a perceptual feature space.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ambient_bench.components import ImageSet, Metric
from ambient_bench.errors import UserError
from ambient_bench.metrics import features
from ambient_bench.metrics.fd_dinov2 import EXTRACTOR as DINOV2, PREPROCESSING, default_identity, dinov2_protocol, \
    require_weights, weights_sha256
from ambient_bench.params import Param
from ambient_bench.registry import register_metric

PIXELS = "pixels-avgpool8"


class PixelFeatureExtractor(features.Extractor):
    """uint8 N×3×H×W → 8×8 average-pooled pixels in [0, 1], flattened (192-d); no weights."""

    layers = ("pixels",)

    def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
        super().__init__(name, features_list)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (F.adaptive_avg_pool2d(x.float() / 255, 8).flatten(1),)


features.register_extractor(PIXELS, PixelFeatureExtractor)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (as sklearn's normalize)."""
    x = np.asarray(x, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def vendi_score(x: np.ndarray) -> float:
    """Vendi score (q = 1) of the rows of ``x`` with the cosine-similarity kernel."""
    x = normalize_rows(x)
    n = len(x)
    if n == 0:
        raise ValueError("the Vendi score needs at least one sample")
    # K/n = X Xᵀ/n (n×n) and Xᵀ X/n (d×d) share their non-zero eigenvalues: take the smaller one
    gram = x @ x.T if n <= x.shape[1] else x.T @ x
    eig = np.linalg.eigvalsh(gram / n)
    eig = eig[eig > 1e-12]  # round-off leaves tiny negative or zero eigenvalues; 0·log 0 = 0
    return float(np.exp(-np.sum(eig * np.log(eig))))


def nn_cosine_distances(gen: np.ndarray, train: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each row of ``gen``, 1 − max cosine similarity to the rows of ``train`` (chunked: n·m can be big)."""
    gen, train = normalize_rows(gen), normalize_rows(train)
    if len(train) == 0:
        raise ValueError("memorization needs at least one reference image")
    best = np.concatenate([(gen[s:s + chunk] @ train.T).max(axis=1) for s in range(0, len(gen), chunk)])
    return np.clip(1.0 - best, 0.0, 2.0)  # clip: round-off gives −1e-16 for identical features


class FeatureMetric(Metric):
    """Shared parameters and feature plumbing of the metrics in this module."""

    params = {
        "features": Param(DINOV2, "torch-fidelity feature extractor", kind=str),
        "weights": Param(None, "weights file of the extractor (null: its default; for "
                               f"{DINOV2}: $TORCH_HOME/hub/checkpoints/dinov2_vitl14_pretrain.pth)",
                         kind=str, nullable=True, semantic=False),  # its sha256 enters keys instead
        "device": Param("auto", "auto, cpu, cuda or cuda:N", kind=str, semantic=False),
        "batch": Param(64, "images per forward pass", kind=int, ge=1, semantic=False),
    }
    test_params = {"features": PIXELS}

    def check(self) -> None:
        registered = features.registry()
        if self.p.features not in registered:
            raise UserError(f"{self.name}: unknown feature extractor '{self.p.features}' (registered: "
                            f"{', '.join(sorted(registered))})")
        if self.p.features == DINOV2:
            require_weights(self.p.weights, "vitl14")
        elif self.p.weights:
            features.require_file(Path(self.p.weights), f"{self.name} ({self.p.features})", "its source")

    def content_identity(self) -> dict[str, Any]:
        if not self.p.weights and self.p.features == DINOV2:
            return {"weights_sha256": default_identity("vitl14")}  # the pin until the file is fetched
        path = Path(self.p.weights).expanduser() if self.p.weights else None
        if path is None:
            return {}
        return {"weights_sha256": weights_sha256(path) if path.is_file() else "missing"}

    def _weights(self) -> str | None:
        if self.p.features == DINOV2:  # a resolved path: the extractor never guesses a default on its own
            return str(require_weights(self.p.weights, "vitl14"))
        if self.p.weights:  # torch-fidelity's own extractors load their weights unguarded
            features.require_safe_weights(Path(self.p.weights).expanduser())
        return self.p.weights

    def _layer(self) -> str:
        return features.registry()[self.p.features].get_default_feature_layer_for_metric("fid")

    def features_of(self, images: torch.Tensor) -> np.ndarray:
        self.check()
        return features.extract(images, self.p.features, self._layer(), features.resolve_metric_device(self.p.device),
                                self.p.batch, feature_extractor_weights_path=self._weights(), verbose=False)

    def extractor_id(self, count: int) -> dict[str, Any]:
        weights = self._weights()
        preprocessing = PREPROCESSING if self.p.features == DINOV2 else \
            f"torch-fidelity {features.torch_fidelity_version()} {self.p.features} own"
        return {"extractor": self.p.features, "layer": self._layer(), "preprocessing": preprocessing,
                "weights_sha256": weights_sha256(Path(weights)) if weights else None, "count": count}

    def protocol(self) -> dict[str, Any]:
        if self.p.features == DINOV2:
            return dinov2_protocol(self.p.weights, "vitl14")  # names the file as missing rather than failing
        return {"feature_extractor": f"{self.p.features} (torch-fidelity extractor, layer {self._layer()})"
                                     + ("; pixels, not a perceptual feature space" if self.p.features == PIXELS
                                        else ""),
                "implementation": f"ambient_bench numpy; torch-fidelity {features.torch_fidelity_version()}"}


@register_metric("vendi")
class Vendi(FeatureMetric):
    """Vendi score of the generated samples (effective number of distinct samples; higher = more diverse)."""

    version = 1
    higher_is_better = True

    def compute(self, samples: torch.Tensor, reference: ImageSet, setup_dir: Path,
                cache_dir: Path) -> dict[str, float]:
        return {"vendi": vendi_score(self.features_of(samples))}

    def protocol(self) -> dict[str, Any]:
        out = super().protocol()
        out["implementation"] += "; Vendi q=1, cosine kernel of L2-normalised features, one set = all samples"
        return out


@register_metric("memorization")
class Memorization(FeatureMetric):
    """Nearest-neighbour cosine distance of samples to the reference (training) images; higher = less copying."""

    version = 1
    higher_is_better = True  # of the first value, nn_distance_mean: farther from the training set
    params = {**FeatureMetric.params,
              "threshold": Param(0.05, "cosine distance below which a sample counts as memorised", gt=0, le=2)}

    def compute(self, samples: torch.Tensor, reference: ImageSet, setup_dir: Path,
                cache_dir: Path) -> dict[str, float]:
        train, _ = features.cached_features(cache_dir, reference.content_hash(), self.extractor_id(len(reference)),
                                            lambda: self.features_of(reference.images))
        dist = nn_cosine_distances(self.features_of(samples), train)
        return {"nn_distance_mean": float(dist.mean()), "nn_distance_median": float(np.median(dist)),
                "memorized_fraction": float((dist < self.p.threshold).mean())}

    def protocol(self) -> dict[str, Any]:
        out = super().protocol()
        out["implementation"] += (f"; nearest neighbour by cosine distance (1 - cos) among the reference "
                                  f"(training) images, memorised: distance < {self.p.threshold}")
        return out
