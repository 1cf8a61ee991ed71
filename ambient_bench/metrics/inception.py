"""FID, KID and precision/recall on Inception-v3 pool3 features (torch-fidelity ``inception-v3-compat``).

``inception-v3-compat`` is torch-fidelity's port of the TF1 graph ``inception-2015-12-05``
(the detector of TTUR, EDM/ambient-utils and clean-fid's ``legacy_tensorflow`` mode): same
weights, TF1-style bilinear resize to 299 with no antialias, ``(x - 128) / 128``, 2048-d pool3.
The weights are torch-fidelity's file at ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``
(TORCH_HOME defaults to ``~/.cache/torch``), downloaded on first use and checked against the sha256 pinned in
``ambient_bench/weights.py``; or the metric's ``weights`` path, never downloaded. ``check()`` (run by ``run``
before anything trains) names the file, its URL and the folder when it is missing offline or a download failed.

Reference features are cached in the run store's ``_refstats`` folder under a key made of the
reference content hash, extractor, layer, weights sha256 and image count (torch-fidelity's own
cache keys by name only and would reuse stale statistics). Generated features are not cached.

Parity with clean-fid. clean-fid's ``legacy_tensorflow`` mode runs NVIDIA's TorchScript export
of the same TF graph, which resizes inside the network like TF; torch-fidelity's documented
error against TF is ~1e-6 relative on FID, and the FD formulas differ only in the matrix square
root (eigenvalues of Σ1Σ2 here, ``scipy.linalg.sqrtm`` there), also ~1e-6 relative. Expect the
two to agree to about 1e-5 relative on the same PNG folders; ``benchmarks/tools/fid_parity.py``
measures it where both weight files (and clean-fid) are present. Not verified offline.
"""
from __future__ import annotations

import os
from abc import abstractmethod
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ambient_bench import weights
from ambient_bench.components import ImageSet, Metric
from ambient_bench.metrics import features
from ambient_bench.params import Param
from ambient_bench.registry import register_metric

EXTRACTOR = "inception-v3-compat"
LAYER = "2048"
WEIGHTS = weights.REGISTRY["inception"]
WEIGHTS_FILE, WEIGHTS_URL = WEIGHTS.filename, WEIGHTS.url  # torch-fidelity's URL_INCEPTION_V3
KID_RNG_SEED = 2020  # torch-fidelity's default: subsets are drawn reproducibly

def default_weights_path() -> Path:
    """Where torch.hub (and so torch-fidelity) looks: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


weights_sha256 = features.file_sha256  # memoised per (path, size, mtime)


def require_weights(path: Path, what: str, explicit: bool) -> Path:
    """The weights file; the default one is fetched on first use (an explicit path never is)."""
    reason = None
    if explicit:
        how = f" (folder {path.parent}, named by the metric's 'weights' parameter)"
    else:
        reason = weights.fetch(WEIGHTS)
        home = os.environ.get("TORCH_HOME")
        where = f"TORCH_HOME={home}" if home else "TORCH_HOME unset, so ~/.cache/torch"
        how = (f" (folder {path.parent} = $TORCH_HOME/hub/checkpoints, {where}; "
               f"or set the metric's 'weights' parameter to the file)")
    return features.require_file(path, what, WEIGHTS_URL, how, reason)


COMMON = {
    "device": Param("auto", "where the extractor runs: auto = CUDA when present", kind=str,
                    choices=("auto", "cpu", "cuda"), semantic=False),
    "batch": Param(64, "images per extractor batch", kind=int, ge=1, semantic=False),
    # the file's sha256 enters keys (content_identity), not where it lies
    "weights": Param(None, f"path of {WEIGHTS_FILE}; default $TORCH_HOME/hub/checkpoints/{WEIGHTS_FILE}",
                     kind=str, nullable=True, semantic=False),
}


class InceptionMetric(Metric):
    """Shared part: the weights file, features of both sides, and the protocol."""

    params = COMMON

    def weights_path(self) -> Path:
        return Path(self.p.weights).expanduser() if self.p.weights else default_weights_path()

    def check(self) -> None:
        require_weights(self.weights_path(), f"metric '{self.name}'", explicit=bool(self.p.weights))

    def content_identity(self) -> dict[str, Any]:
        path = self.weights_path()
        if self.p.weights:
            return {"weights_sha256": weights_sha256(path) if path.is_file() else "missing"}
        return {"weights_sha256": weights.identity(WEIGHTS, path)}  # the pin until the file is fetched

    def features(self, samples: torch.Tensor, reference: ImageSet, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        """(generated, reference) N×2048 pool3 features; the reference side through the cache."""
        self.check()
        path = features.require_safe_weights(self.weights_path())  # torch-fidelity loads it unguarded
        device = features.resolve_metric_device(self.p.device)
        # an explicit path: torch-fidelity never downloads; verbose=False: no "Creating feature extractor" lines
        kwargs = {"feature_extractor_weights_path": str(path), "verbose": False}
        ref, _ = features.reference_features(reference, cache_dir, EXTRACTOR, LAYER, device, self.p.batch,
                                             identity={"weights_sha256": weights_sha256(path)}, **kwargs)
        gen = features.extract(samples, EXTRACTOR, LAYER, device, self.p.batch, **kwargs)
        return gen, ref

    def protocol(self) -> dict[str, Any]:
        path = self.weights_path()
        digest = weights_sha256(path)[:12] if path.is_file() else "missing"
        return {"implementation": f"torch-fidelity {metadata.version('torch-fidelity')}, {EXTRACTOR} "
                                  f"(TF1 inception-2015-12-05 port), weights sha256 {digest}",
                "feature_layer": f"{LAYER} (pool3, 2048-d)"}

    def compute(self, samples: torch.Tensor, reference: ImageSet, setup_dir: Path,
                cache_dir: Path) -> dict[str, float]:
        gen, ref = self.features(samples, reference, cache_dir)
        return self.score(gen, ref)

    @abstractmethod
    def score(self, gen: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        """The metric's values from generated and reference features (N×2048 each)."""


def _tensor(array: np.ndarray) -> torch.Tensor:
    # float32, as torch-fidelity's own pipeline hands features to its metric functions
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


@register_metric("fid")
class FID(InceptionMetric):
    """Fréchet Inception Distance (torch-fidelity inception-v3-compat, pool3)."""

    params = {**COMMON, "bootstrap": Param(0, features.BOOTSTRAP_HELP, kind=int, ge=0, omit_default=True)}

    def score(self, gen: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        return features.with_bootstrap("fid", features.frechet_distance(gen, ref), gen,
                                       lambda g: features.frechet_distance(g, ref), self.p.bootstrap)

    def protocol(self) -> dict[str, Any]:
        return features.bootstrap_note(super().protocol(), self.p.bootstrap)


@register_metric("kid")
class KID(InceptionMetric):
    """Kernel Inception Distance: mean (and std) of the unbiased MMD² over random subsets."""

    params = {**COMMON,
              "subsets": Param(100, "number of random subsets", kind=int, ge=1),
              "subset_size": Param(1000, "images per subset, clamped to min(N_generated, N_reference)",
                                   kind=int, ge=2)}

    def score(self, gen: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        # torch-fidelity raises when a side has fewer images than the subset size
        self.used_subset_size = min(self.p.subset_size, len(gen), len(ref))
        from torch_fidelity.metric_kid import kid_features_to_metric  # here: torch-fidelity loads torchvision

        out = kid_features_to_metric(_tensor(gen), _tensor(ref), kid_subsets=self.p.subsets,
                                     kid_subset_size=self.used_subset_size, rng_seed=KID_RNG_SEED, verbose=False)
        return {"kid": float(out["kernel_inception_distance_mean"]),
                "kid_std": float(out["kernel_inception_distance_std"])}

    def protocol(self) -> dict[str, Any]:
        used = getattr(self, "used_subset_size", None)
        size = f"{self.p.subset_size} clamped to min(N_generated, N_reference)" + (f" = {used}" if used else "")
        return {**super().protocol(), "kid_subsets": self.p.subsets, "kid_subset_size": size,
                "kid_kernel": "polynomial, degree 3, gamma 1/d, coef 1", "kid_rng_seed": KID_RNG_SEED}


class PRCMetric(InceptionMetric):
    """Improved precision/recall (Kynkäänniemi et al.) with k-NN balls."""

    higher_is_better = True
    params = {**COMMON, "neighborhood": Param(3, "k of the k-nearest-neighbour balls", kind=int, ge=1)}
    key = ""

    def score(self, gen: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        # input1 = generated, input2 = real: precision = generated inside real balls (torch-fidelity ≥ PR #66)
        from torch_fidelity.metric_prc import prc_features_to_metric

        out = prc_features_to_metric(_tensor(gen), _tensor(ref), prc_neighborhood=self.p.neighborhood,
                                     prc_batch_size=10000, save_cpu_ram=True, verbose=False)
        return {self.key: float(out[self.key])}

    def protocol(self) -> dict[str, Any]:
        return {**super().protocol(), "prc_neighborhood": self.p.neighborhood,
                "prc_convention": "precision: generated inside real k-NN balls; recall: real inside generated"}


@register_metric("precision")
class Precision(PRCMetric):
    """Precision: fraction of generated images inside the real images' k-NN balls (Inception pool3)."""

    key = "precision"


@register_metric("recall")
class Recall(PRCMetric):
    """Recall: fraction of real images inside the generated images' k-NN balls (Inception pool3)."""

    key = "recall"
