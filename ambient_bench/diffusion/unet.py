"""DDPM++ U-Net (Song et al. 2021, in the configuration EDM trains as ``ddpmpp``), written for this package.

One residual block type serves every position (plain, down-sampling, up-sampling, with or without
self-attention); the noise level enters each block as a per-channel shift. Every encoder output is
a skip that one decoder block concatenates. Residual branches and the output convolution start at
zero, so an untrained network predicts F = 0 (D = c_skip · x) and every block starts as its skip path.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ARCH_KEYS = ("model_channels", "channel_mult", "num_blocks", "attn_resolutions", "dropout", "augment_dim",
             "label_dim")

# Architectures by name. The paper presets are DDPM++ as EDM configures it for CIFAR-10 (55.7 M
# parameters) and for 64×64 data (61.8 M); ``cpu`` is small enough to train in minutes on a laptop.
NETWORK_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [],
            "dropout": 0.0, "augment_dim": 0, "label_dim": 0},
    "paper_cifar": {"model_channels": 128, "channel_mult": [2, 2, 2], "num_blocks": 4, "attn_resolutions": [16],
                    "dropout": 0.13, "augment_dim": 9, "label_dim": 0},
    "paper_64": {"model_channels": 128, "channel_mult": [1, 2, 2, 2], "num_blocks": 4, "attn_resolutions": [16],
                 "dropout": 0.1, "augment_dim": 9, "label_dim": 0},
}


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, max(1, channels // 4)), num_channels=channels, eps=1e-6)


def xavier(module: nn.Conv2d | nn.Linear, gain: float = 1.0) -> nn.Module:
    """DDPM++'s initialisation: Xavier-uniform weights (scaled by ``gain``), zero biases."""
    nn.init.xavier_uniform_(module.weight, gain=gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise label c_noise = ln(sigma) / 4; frequencies from 1
    down to 1/max_period, geometrically spaced."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", (1.0 / max_period) ** (torch.arange(half) / max(1, half - 1)),
                             persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float().unsqueeze(1) * self.freqs.unsqueeze(0)
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class NoiseEmbedding(nn.Module):
    """The per-image conditioning vector (4 · model_channels wide): noise level, plus augmentation
    labels and class labels when the network takes them (bias-free maps, so all-zero labels add nothing)."""

    def __init__(self, model_channels: int, augment_dim: int = 0, label_dim: int = 0) -> None:
        super().__init__()
        emb_dim = 4 * model_channels
        self.augment_dim, self.label_dim = augment_dim, label_dim
        self.positional = PositionalEmbedding(model_channels)
        self.augment = xavier(nn.Linear(augment_dim, model_channels, bias=False)) if augment_dim else None
        self.label = xavier(nn.Linear(label_dim, model_channels, bias=False)) if label_dim else None
        self.mlp = nn.Sequential(xavier(nn.Linear(model_channels, emb_dim)), nn.SiLU(),
                                 xavier(nn.Linear(emb_dim, emb_dim)), nn.SiLU())

    def forward(self, c_noise: torch.Tensor, augment_labels: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.positional(c_noise)
        if self.augment is not None and augment_labels is not None:  # None means "not augmented" = zeros
            emb = emb + self.augment(augment_labels.to(emb.dtype))
        if self.label is not None:
            if class_labels is None:
                raise ValueError(f"this network is class-conditional (label_dim {self.label_dim}): pass class_labels")
            emb = emb + self.label(class_labels.to(emb.dtype))
        return self.mlp(emb)


class UNetBlock(nn.Module):
    """Residual block, optionally resampling (2×2 average down / nearest up, on both paths) and
    followed by single-head self-attention over the pixels."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, up: bool = False,
                 down: bool = False, attention: bool = False) -> None:
        super().__init__()
        self.up, self.down = up, down
        self.norm0, self.conv0 = group_norm(c_in), xavier(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.affine = xavier(nn.Linear(emb_dim, c_out))
        self.norm1, self.dropout = group_norm(c_out), nn.Dropout(dropout)
        self.conv1 = zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = xavier(nn.Conv2d(c_in, c_out, 1)) if c_in != c_out or up or down else None
        self.attention = attention
        if attention:
            self.norm2 = group_norm(c_out)
            self.qkv = xavier(nn.Conv2d(c_out, 3 * c_out, 1), gain=math.sqrt(0.2))
            self.proj = zero_init(nn.Conv2d(c_out, c_out, 1))

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(self.resample(F.silu(self.norm0(x))))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None]))
        h = self.conv1(self.dropout(h))
        skip = self.skip(self.resample(x)) if self.skip is not None else x
        x = (h + skip) * math.sqrt(0.5)  # keeps the variance of the sum of two unit-variance paths
        if self.attention:
            n, c, height, width = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(n, 3, 1, c, height * width).unbind(1)
            a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
            x = (x + self.proj(a.transpose(-1, -2).reshape(n, c, height, width))) * math.sqrt(0.5)
        return x


class Encoder(nn.Module):
    """The down path shared by the U-Net and the classifier's half U-Net. ``skip_channels`` lists
    the channels of every output (input conv, blocks, down blocks); ``resolution`` is the deepest one."""

    def __init__(self, img_channels: int, resolution: int, model_channels: int, channel_mult: Sequence[int],
                 num_blocks: int, attn_resolutions: Sequence[int], dropout: float) -> None:
        super().__init__()
        emb_dim = 4 * model_channels
        self.conv_in = xavier(nn.Conv2d(img_channels, model_channels, 3, padding=1))
        self.blocks = nn.ModuleList()
        c, res = model_channels, resolution
        self.skip_channels = [c]
        for level, mult in enumerate(channel_mult):
            if level > 0:
                res //= 2
                self.blocks.append(UNetBlock(c, c, emb_dim, dropout, down=True))
                self.skip_channels.append(c)
            for _ in range(num_blocks):
                self.blocks.append(UNetBlock(c, model_channels * mult, emb_dim, dropout,
                                             attention=res in attn_resolutions))
                c = model_channels * mult
                self.skip_channels.append(c)
        self.resolution = res

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> list[torch.Tensor]:
        outputs = [self.conv_in(x)]
        for block in self.blocks:
            outputs.append(block(outputs[-1], emb))
        return outputs


class UNet(nn.Module):
    """F_theta(x, c_noise): image-to-image network used inside the EDM preconditioning."""

    def __init__(self, img_channels: int, resolution: int, model_channels: int = 16,
                 channel_mult: Sequence[int] = (1, 2), num_blocks: int = 1, attn_resolutions: Sequence[int] = (),
                 dropout: float = 0.0, augment_dim: int = 0, label_dim: int = 0) -> None:
        super().__init__()
        emb_dim = 4 * model_channels
        self.augment_dim = augment_dim
        self.embed = NoiseEmbedding(model_channels, augment_dim, label_dim)
        self.encoder = Encoder(img_channels, resolution, model_channels, channel_mult, num_blocks,
                               attn_resolutions, dropout)
        skips, res = list(self.encoder.skip_channels), self.encoder.resolution
        c = skips[-1]
        self.decoder, concat = nn.ModuleList(), []
        for level, mult in reversed(list(enumerate(channel_mult))):
            if level == len(channel_mult) - 1:  # the bottleneck: attention at the lowest resolution always
                self.decoder.extend([UNetBlock(c, c, emb_dim, dropout, attention=True),
                                     UNetBlock(c, c, emb_dim, dropout)])
            else:
                res *= 2
                self.decoder.append(UNetBlock(c, c, emb_dim, dropout, up=True))
            concat += [False] * (len(self.decoder) - len(concat))
            for idx in range(num_blocks + 1):
                self.decoder.append(UNetBlock(c + skips.pop(), model_channels * mult, emb_dim, dropout,
                                              attention=idx == num_blocks and res in attn_resolutions))
                c = model_channels * mult
                concat.append(True)
        self.concat = tuple(concat)  # which decoder blocks take the next skip
        self.norm_out = group_norm(c)
        self.conv_out = zero_init(nn.Conv2d(c, img_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, augment_labels: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(c_noise, augment_labels, class_labels)
        skips = self.encoder(x, emb)
        h = skips[-1]
        for block, concat in zip(self.decoder, self.concat):
            h = block(torch.cat([h, skips.pop()], dim=1) if concat else h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def network_architecture(net_cfg: dict[str, Any]) -> dict[str, Any]:
    """The preset's architecture with any explicitly given (non-null) keys replacing its values."""
    arch = copy.deepcopy(NETWORK_PRESETS[net_cfg.get("preset") or "cpu"])
    arch.update({k: v for k, v in net_cfg.items() if k in ARCH_KEYS and v is not None})
    return arch


def build_unet(net_cfg: dict[str, Any], img_channels: int, resolution: int) -> UNet:
    return UNet(img_channels, resolution, **network_architecture(net_cfg))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
