"""The noise-conditional classifier: the encoder half of the diffusion U-Net, pooled to one logit.

Paper App. E.4 ("Half-UNet"): the U-Net's input convolution and down path, global average
pooling and a linear head. Inputs are EDM-preconditioned like the denoiser's: c_in(sigma)·x_t
and c_noise = ln(sigma)/4. The logit is for the positive class of the task: "corrupted" for the
noise classifier, "target distribution" for the crops classifier.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ambient_bench.diffusion.augment import LABEL_DIM
from ambient_bench.diffusion.unet import NETWORK_PRESETS, Encoder, NoiseEmbedding
from ambient_bench.diffusion.unet import parameter_count as parameter_count  # re-exported for callers

# Architectures by name: the denoiser's presets without class or augmentation inputs (augmentation
# labels are added when the classifier trains with augmentation, see ``architecture``).
# ``paper_cifar`` / ``paper_64`` are the DDPM++ encoder of the paper's denoisers, 19.6 M / 21.5 M
# parameters as the paper reports.
PRESETS: dict[str, dict[str, Any]] = {
    name: {k: v for k, v in arch.items() if k not in ("augment_dim", "label_dim")}
    for name, arch in NETWORK_PRESETS.items()}


class HalfUNet(nn.Module):
    """Encoder-only U-Net: logits(x, c_noise) with one output per image."""

    def __init__(self, img_channels: int, resolution: int, model_channels: int = 16,
                 channel_mult: Sequence[int] = (1, 2), num_blocks: int = 1,
                 attn_resolutions: Sequence[int] = (), dropout: float = 0.0, augment_dim: int = 0) -> None:
        super().__init__()
        self.augment_dim = augment_dim
        self.embed = NoiseEmbedding(model_channels, augment_dim)
        self.encoder = Encoder(img_channels, resolution, model_channels, channel_mult, num_blocks,
                               attn_resolutions, dropout)
        self.head = nn.Linear(self.encoder.skip_channels[-1], 1)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, augment_labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        h = self.encoder(x, self.embed(c_noise, augment_labels))[-1]
        return self.head(h.mean(dim=(2, 3))).squeeze(1)


class NoiseConditionalClassifier(nn.Module):
    """logit(x_t, sigma) with the EDM input scaling; x_t in the model's [-1, 1] units plus noise."""

    def __init__(self, net: HalfUNet, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.net, self.sigma_data = net, sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, augment_labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        sigma = sigma.to(x.dtype).reshape(-1)
        c_in = 1 / (sigma ** 2 + self.sigma_data ** 2).sqrt()
        return self.net(c_in.reshape(-1, 1, 1, 1) * x, sigma.log() / 4, augment_labels)


def architecture(net_cfg: dict[str, Any]) -> dict[str, Any]:
    """The preset's architecture with any explicitly given (non-null) keys replacing its values; with
    ``augment_p`` > 0 the network takes EDM's 9 augmentation labels (as EDM's train.py sets augment_dim)."""
    arch = dict(PRESETS[net_cfg["preset"]])
    arch.update({k: v for k, v in net_cfg.items() if k in arch and v is not None})
    if net_cfg.get("augment_p", 0) > 0:
        arch["augment_dim"] = LABEL_DIM
    return arch


def build_classifier(net_cfg: dict[str, Any], img_channels: int, resolution: int,
                     sigma_data: float = 0.5) -> NoiseConditionalClassifier:
    return NoiseConditionalClassifier(HalfUNet(img_channels, resolution, **architecture(net_cfg)), sigma_data)
