"""FD_DINOv2 the way the paper computed it (EDM2's ``calculate_metrics.py``, modelled on dgm-eval).

Protocol (EDM2 ``DINOv2Detector``, ``resize_mode='torch'``): uint8 images → float →
``F.interpolate(224×224, bicubic, antialias=True)`` → /255 → ImageNet mean/std → DINOv2 ViT-L/14
(LVD-142M, no registers) → the CLS token after the final LayerNorm (1024-d). Statistics in float64,
Fréchet distance with ``scipy.linalg.sqrtm`` (real part).

The network is timm's ViT with DINOv2's hyper-parameters, loaded from the ORIGINAL checkpoint file
``dinov2_vitl14_pretrain.pth`` (no torch.hub code download; the checkpoint itself is fetched into
``$TORCH_HOME/hub/checkpoints`` on first use and checked against the sha256 pinned in
``ambient_bench/weights.py``; an explicit ``weights`` path is never downloaded). The
checkpoint's 37×37 position grid is resampled once to 16×16 with DINOv2's own run-time formula
(bicubic, ``scale_factor=(16 + 0.1) / 37``, no antialias); timm's resampling at load time differs,
so we never let timm do it. With this the features equal the original DINOv2 code's (max diff 0.0
in the reference check). torch-fidelity's built-in ``dinov2-vit-l-14`` uses bilinear resizing
without antialias and is NOT this protocol, hence the separate extractor ``dinov2-vit-l-14-edm2``.
"""
from __future__ import annotations

import math
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from ambient_bench import fileio, weights
from ambient_bench.components import ImageSet, Metric
from ambient_bench.metrics import features
from ambient_bench.params import Param
from ambient_bench.registry import register_metric

EXTRACTOR = "dinov2-vit-l-14-edm2"
LAYER = "dinov2"
PREPROCESSING = "bicubic-aa-224"
PAPER_ARCH = "vitl14"
# arch → (timm name, width, depth, heads); patch 14, MLP ratio 4, LayerScale 1e-5, no registers
ARCHS: dict[str, tuple[str, int, int, int]] = {
    "vits14": ("vit_small_patch14_dinov2", 384, 12, 6),
    "vitb14": ("vit_base_patch14_dinov2", 768, 12, 12),
    "vitl14": ("vit_large_patch14_dinov2", 1024, 24, 16),
}
IMG_SIZE, PATCH = 224, 14
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def checkpoint_name(arch: str) -> str:
    return f"dinov2_{arch}_pretrain.pth"


def checkpoint_url(arch: str) -> str:
    return weights.dinov2(arch).url


def checkpoint_dir() -> Path:
    """torch.hub's checkpoint folder ($TORCH_HOME/hub/checkpoints), read at call time so TORCH_HOME counts."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_path(weights: str | None, arch: str) -> Path:
    return Path(weights).expanduser() if weights else checkpoint_dir() / checkpoint_name(arch)


def require_weights(weights: str | None, arch: str) -> Path:
    """The checkpoint path (the default one fetched on first use), or the one-line UserError naming file, URL
    and directory."""
    path = weights_path(weights, arch)
    reason = None if weights else _fetch(arch)
    where = (f" (expected directory: {path.parent}, i.e. $TORCH_HOME/hub/checkpoints with "
             f"TORCH_HOME={os.environ.get('TORCH_HOME', 'unset')}; or set the metric's `weights` param)")
    return features.require_file(path, f"FD_DINOv2 ({arch})", checkpoint_url(arch), where, reason)


def _fetch(arch: str) -> str | None:
    return weights.fetch(weights.dinov2(arch))


def default_identity(arch: str) -> str:
    """The default checkpoint's sha256 for stage keys: the file's, or its pin until it is fetched."""
    return weights.identity(weights.dinov2(arch), checkpoint_dir() / checkpoint_name(arch))


weights_sha256 = features.file_sha256  # memoised per (path, size, mtime)


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: int, offset: float = 0.1) -> torch.Tensor:
    """DINOv2's run-time ``interpolate_pos_encoding`` for a square ``grid``, applied once to the weights.

    DINOv2 scales by (grid + offset) / M rather than asking for size=grid: the 0.1 offset avoids a
    floating-point off-by-one in the output size, and it changes the interpolation weights, so an
    exact port must use scale_factor too. Like DINOv2, an already matching grid is returned as is.
    """
    cls, patch = pos_embed[:, :1], pos_embed[:, 1:]
    side, dim = int(math.sqrt(patch.shape[1])), patch.shape[-1]
    if side * side != patch.shape[1]:
        raise ValueError(f"pos_embed has {patch.shape[1]} patch tokens, not a square grid")
    if side == grid:
        return pos_embed
    scale = (grid + offset) / side
    grid_in = patch.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    out = F.interpolate(grid_in, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if out.shape[-2:] != (grid, grid):
        raise ValueError(f"pos_embed interpolation gave {tuple(out.shape[-2:])}, expected {grid}×{grid}")
    return torch.cat([cls, out.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos_embed.dtype)], dim=1)


def arch_of(state_dict: dict[str, torch.Tensor]) -> str:
    width = state_dict["cls_token"].shape[-1]
    for arch, (_, dim, _, _) in ARCHS.items():
        if dim == width:
            return arch
    raise ValueError(f"DINOv2 checkpoint of width {width}: not one of {sorted(ARCHS)}")


def timm_vit(arch: str) -> nn.Module:
    """timm ViT with DINOv2's architecture at 224², parameters on the meta device (no memory, no init)."""
    import timm  # here: timm pulls in torchvision (about 1 s), which `list` and `plan` never need

    timm_name, dim, depth, heads = ARCHS[arch]
    # every architecture argument spelled out, so a change of timm's defaults cannot slip in; meta
    # device because random initialisation of ViT-L takes tens of seconds on CPU and is all overwritten
    with torch.device("meta"):
        return timm.create_model(timm_name, pretrained=False, img_size=IMG_SIZE, patch_size=PATCH, embed_dim=dim,
                                 depth=depth, num_heads=heads, mlp_ratio=4.0, qkv_bias=True, init_values=1e-5,
                                 class_token=True, reg_tokens=0, no_embed_class=False, global_pool="token",
                                 num_classes=0, dynamic_img_size=False)


def build_model(state_dict: dict[str, torch.Tensor], arch: str) -> nn.Module:
    """``timm_vit(arch)`` loaded strictly from an original DINOv2 state dict."""
    model = timm_vit(arch)
    sd = {k: v.float() for k, v in state_dict.items() if k != "mask_token"}  # mask_token: masked training only
    sd["pos_embed"] = dinov2_pos_embed(sd["pos_embed"], IMG_SIZE // PATCH)
    model.load_state_dict(sd, strict=True, assign=True)  # strict: every parameter comes from the checkpoint
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise ValueError("DINOv2 checkpoint left parameters of the timm model unset")
    return model.eval().requires_grad_(False)


def edm2_preprocess(x: torch.Tensor) -> torch.Tensor:
    """EDM2 ``resize_mode='torch'``: no uint8 quantisation after the resize."""
    x = F.interpolate(x.float(), size=(IMG_SIZE, IMG_SIZE), mode="bicubic", antialias=True) / 255
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class DinoV2EDM2Extractor(features.Extractor):
    """torch-fidelity adapter: uint8 N×3×H×W → CLS token after the final norm (1024-d for ViT-L/14).

    ``feature_extractor_weights_path``: the original DINOv2 checkpoint (default: torch.hub's
    checkpoint folder). ``dinov2_arch``: expected architecture; None = read it from the checkpoint.
    """

    layers = (LAYER,)

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 dinov2_arch: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, features_list)
        path = require_weights(feature_extractor_weights_path, dinov2_arch or PAPER_ARCH)
        state = fileio.torch_load(path, what="DINOv2 weights file", fix=fileio.WEIGHTS_FIX)
        arch = arch_of(state)
        if dinov2_arch is not None and arch != dinov2_arch:
            raise ValueError(f"{path} holds a DINOv2 {arch} checkpoint, expected {dinov2_arch}")
        self.arch = arch
        self.model = build_model(state, arch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{EXTRACTOR} needs uint8 N×3×H×W, got {x.dtype} {tuple(x.shape)}")
        return (self.model(edm2_preprocess(x)).float(),)


features.register_extractor(EXTRACTOR, DinoV2EDM2Extractor)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to feature sets ``a`` and ``b`` (float64, sqrtm real part, as EDM2)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 images on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    # (Σ f fᵀ − N μ μᵀ)/(N − 1), EDM2's accumulation, is the unbiased covariance np.cov computes
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(root).all():  # singular product (N < D): dgm-eval's ε·I fallback
        eps = 1e-6 * np.eye(len(sigma_a))
        root = scipy.linalg.sqrtm((sigma_a + eps) @ (sigma_b + eps))
    return float(np.square(mu_a - mu_b).sum() + np.trace(sigma_a + sigma_b - 2 * np.real(root)))


def dinov2_features(images: torch.Tensor, weights: str | None, arch: str, device: str, batch: int) -> np.ndarray:
    path = require_weights(weights, arch)
    return features.extract(images, EXTRACTOR, LAYER, features.resolve_metric_device(device), batch,
                            feature_extractor_weights_path=str(path), dinov2_arch=arch, verbose=False)


def extractor_id(weights: str | None, arch: str, count: int) -> dict[str, Any]:
    """What defines cached DINOv2 reference features (see features.cached_features)."""
    sha = weights_sha256(require_weights(weights, arch))
    return {"extractor": EXTRACTOR, "layer": LAYER, "arch": arch, "weights_sha256": sha,
            "preprocessing": PREPROCESSING, "count": count}


def dinov2_protocol(weights: str | None, arch: str) -> dict[str, Any]:
    path = weights_path(weights, arch)
    sha = weights_sha256(path)[:12] if path.is_file() else "missing"
    return {"feature_extractor": f"{EXTRACTOR}: DINOv2 {arch} CLS token after the final norm "
                                 f"({ARCHS[arch][1]}-d), {checkpoint_name(arch)} sha256 {sha}",
            "implementation": f"timm {metadata.version('timm')} ViT + original DINOv2 checkpoint, pos_embed resampled "
                              f"37→16 the DINOv2 way; preprocessing {PREPROCESSING} (EDM2 resize_mode='torch', "
                              f"ImageNet mean/std); FD in float64 with scipy sqrtm (EDM2/dgm-eval protocol)"}


@register_metric("fd_dinov2")
class FDDinoV2(Metric):
    """Fréchet distance in DINOv2 ViT-L/14 feature space, the EDM2/dgm-eval protocol (FD_DINOv2)."""

    version = 1
    params = {
        "arch": Param(PAPER_ARCH, "DINOv2 backbone; only vitl14 is the paper's FD_DINOv2", kind=str,
                      choices=tuple(ARCHS)),
        "weights": Param(None, "original DINOv2 checkpoint (null: $TORCH_HOME/hub/checkpoints/"
                               "dinov2_<arch>_pretrain.pth)", kind=str, nullable=True, semantic=False),
        "device": Param("auto", "auto, cpu, cuda or cuda:N", kind=str, semantic=False),
        "batch": Param(64, "images per forward pass", kind=int, ge=1, semantic=False),
        "bootstrap": Param(0, features.BOOTSTRAP_HELP, kind=int, ge=0, omit_default=True),
    }

    def check(self) -> None:
        require_weights(self.p.weights, self.p.arch)

    def content_identity(self) -> dict[str, Any]:
        if not self.p.weights:
            return {"weights_sha256": default_identity(self.p.arch)}
        path = weights_path(self.p.weights, self.p.arch)
        return {"weights_sha256": weights_sha256(path) if path.is_file() else "missing"}

    def compute(self, samples: torch.Tensor, reference: ImageSet, setup_dir: Path,
                cache_dir: Path) -> dict[str, float]:
        ref, _ = features.cached_features(
            cache_dir, reference.content_hash(), extractor_id(self.p.weights, self.p.arch, len(reference)),
            lambda: dinov2_features(reference.images, self.p.weights, self.p.arch, self.p.device, self.p.batch))
        gen = dinov2_features(samples, self.p.weights, self.p.arch, self.p.device, self.p.batch)
        return features.with_bootstrap("fd_dinov2", frechet_distance(gen, ref), gen,
                                       lambda g: frechet_distance(g, ref), self.p.bootstrap)

    def protocol(self) -> dict[str, Any]:
        out = dinov2_protocol(self.p.weights, self.p.arch)
        out = features.bootstrap_note(out, self.p.bootstrap)
        if self.p.arch != PAPER_ARCH:  # said in the columns that reach results.csv and footnotes
            note = (f"NOT the paper's FD_DINOv2 (backbone {self.p.arch}, not vitl14; "
                    f"not comparable with published numbers)")
            out["feature_extractor"] = f"{note}; {out['feature_extractor']}"
            out["note"] = note
        return out
