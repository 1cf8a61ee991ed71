"""Fréchet distance on band-pass random-projection features: an offline stand-in, not FID.

The extractor ``bandpass-rp64`` needs no weights, no download and no training, and gives the
same numbers on every machine for the same images (fixed seeded projections, float32):

1. resize to 32×32 (bilinear with antialias), scale to [-1, 1];
2. low band: 3×3 box blur, then 2×2 average pooling → 16×16; a fixed Gaussian random projection
   to 32 dims, through tanh;
3. high band: the 32×32 image minus its 3×3 box blur; another projection to 32 dims, through tanh.

The high band is what makes blur, noise and JPEG-type corruptions visible: a random-init
Inception is no substitute (its features collapse to ~1e-8, giving FID ≈ 0 for anything). Use
it for CI, CPU runs and relative comparisons inside one suite; never report it as FID.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ambient_bench.components import ImageSet, Metric
from ambient_bench.metrics import features
from ambient_bench.params import Param
from ambient_bench.registry import register_metric

EXTRACTOR = "bandpass-rp64"
LAYER = "bandpass64"
SIZE = 32          # working resolution: small images are the harness's CPU scale
BAND_DIM = 32      # dims per band; 64 in all
SEED = 20250101    # fixes the projections: part of the extractor's identity
LOW_GAIN, HIGH_GAIN = 2.0, 8.0  # tanh gains: high-pass residuals are ~4× smaller than low-pass pixels
VERSION = 1        # bump when any of the above changes: enters the reference cache key


def _box3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BandpassExtractor(features.Extractor):
    """torch-fidelity adapter: uint8 N×3×H×W → 64-d tanh random projections of two frequency bands."""

    layers, dummy_shape = (LAYER,), (3, SIZE, SIZE)

    def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
        super().__init__(name, features_list)  # kwargs (weights path, verbose, ...) do not apply
        g = torch.Generator().manual_seed(SEED)
        low_in, high_in = 3 * (SIZE // 2) ** 2, 3 * SIZE ** 2
        # columns of norm ~1: the projection of a unit-RMS image has unit variance
        self.register_buffer("p_low", torch.randn(low_in, BAND_DIM, generator=g) / low_in ** 0.5)
        self.register_buffer("p_high", torch.randn(high_in, BAND_DIM, generator=g) / high_in ** 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{EXTRACTOR} expects uint8 N×3×H×W, got {x.dtype} {tuple(x.shape)}")
        x = x.float() / 127.5 - 1.0
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
        blurred = _box3(x)
        low = F.avg_pool2d(blurred, 2)
        high = x - blurred
        f = torch.cat([torch.tanh(LOW_GAIN * low.flatten(1) @ self.p_low),
                       torch.tanh(HIGH_GAIN * high.flatten(1) @ self.p_high)], dim=1)
        return tuple(f for _ in self.features_list)


features.register_extractor(EXTRACTOR, BandpassExtractor)


@register_metric("fd_bandpass")
class FDBandpass(Metric):
    """Fréchet distance on band-pass random-projection features — not FID (offline, no weights)."""

    params = {
        "device": Param("auto", "where the extractor runs: auto = CUDA when present", kind=str,
                        choices=("auto", "cpu", "cuda"), semantic=False),
        "batch": Param(512, "images per extractor batch", kind=int, ge=1, semantic=False),
    }

    def compute(self, samples: torch.Tensor, reference: ImageSet, setup_dir: Path,
                cache_dir: Path) -> dict[str, float]:
        device = features.resolve_metric_device(self.p.device)
        ref, _ = features.reference_features(reference, cache_dir, EXTRACTOR, LAYER, device, self.p.batch,
                                             identity={"version": VERSION, "seed": SEED}, verbose=False)
        gen = features.extract(samples, EXTRACTOR, LAYER, device, self.p.batch, verbose=False)
        return {"fd_bandpass": features.frechet_distance(gen, ref)}

    def protocol(self) -> dict[str, Any]:
        return {"feature_extractor": f"{EXTRACTOR} v{VERSION}: not FID, not Inception; {2 * BAND_DIM}-d tanh "
                                     f"random projections (seed {SEED}) of a 3×3-box low-pass band at "
                                     f"{SIZE // 2}×{SIZE // 2} and the high-pass residual at {SIZE}×{SIZE}",
                "implementation": f"torch-fidelity {features.torch_fidelity_version()} FD formula, own extractor"}
