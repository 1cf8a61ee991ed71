"""A small U-Net for CPU-sized diffusion experiments (DDPM++-like structure, written from scratch).

Residual blocks conditioned on the noise level through scale/shift, optional self-attention at
chosen resolutions, skip connections from every encoder block to the decoder. The final
convolution starts at zero so an untrained network predicts F = 0 (D = c_skip · x).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, max(1, channels // 4)), num_channels=channels, eps=1e-6)


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise label c_noise = ln(sigma) / 4."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", (1.0 / max_period) ** (torch.arange(half) / half), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float().unsqueeze(1) * self.freqs.unsqueeze(0)
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm0, self.conv0 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * c_out)
        self.norm1, self.dropout = group_norm(c_out), nn.Dropout(dropout)
        self.conv1 = zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(self.dropout(h))
        return (h + self.skip(x)) / math.sqrt(2)


class SelfAttention(nn.Module):
    def __init__(self, channels: int, head_channels: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm, self.qkv = group_norm(channels), nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return (x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))) / math.sqrt(2)


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, dropout)
        self.attn = SelfAttention(c_out) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


def build_encoder(img_channels: int, resolution: int, model_channels: int, channel_mult: Sequence[int],
                  num_blocks: int, attn_resolutions: Sequence[int], dropout: float
                  ) -> tuple[nn.Sequential, nn.Conv2d, nn.ModuleList, list[int], int]:
    """The noise embedding, input convolution and down path shared by the U-Net and the
    classifier's half U-Net; also the channels of every skip output and the last resolution."""
    emb_dim = 4 * model_channels
    embed = nn.Sequential(PositionalEmbedding(model_channels), nn.Linear(model_channels, emb_dim),
                          nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU())
    conv_in = nn.Conv2d(img_channels, model_channels, 3, padding=1)
    down = nn.ModuleList()
    skips, c, res = [model_channels], model_channels, resolution
    for level, mult in enumerate(channel_mult):
        for _ in range(num_blocks):
            down.append(Block(c, model_channels * mult, emb_dim, dropout, res in attn_resolutions))
            c = model_channels * mult
            skips.append(c)
        if level < len(channel_mult) - 1:
            down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            skips.append(c)
            res //= 2
    return embed, conv_in, down, skips, res


def run_encoder(embed: nn.Module, conv_in: nn.Module, down: nn.ModuleList, x: torch.Tensor,
                c_noise: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(noise embedding, outputs of conv_in and of every down layer)."""
    emb = embed(c_noise)
    outputs = [conv_in(x)]
    for layer in down:
        h = outputs[-1]
        outputs.append(layer(h, emb) if isinstance(layer, Block) else layer(h))
    return emb, outputs


class UNet(nn.Module):
    """F_theta(x, c_noise): image-to-image network used inside the EDM preconditioning."""

    def __init__(self, img_channels: int, resolution: int, model_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2), num_blocks: int = 1,
                 attn_resolutions: Sequence[int] = (), dropout: float = 0.0) -> None:
        super().__init__()
        emb_dim = 4 * model_channels
        self.embed, self.conv_in, self.down, skips, res = build_encoder(
            img_channels, resolution, model_channels, channel_mult, num_blocks, attn_resolutions, dropout)
        self.up = nn.ModuleList()
        c = skips[-1]
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_blocks + 1):
                self.up.append(Block(c + skips.pop(), model_channels * mult, emb_dim, dropout,
                                     res in attn_resolutions))
                c = model_channels * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(c, c, 3, padding=1)))
                res *= 2
        self.norm_out = group_norm(c)
        self.conv_out = zero_init(nn.Conv2d(c, img_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb, skips = run_encoder(self.embed, self.conv_in, self.down, x, c_noise)
        h = skips[-1]
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(layer, Block) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
