"""The EDM2 network (Karras et al. 2024), written from the paper's description: a magnitude-preserving
U-Net (``mp_layers``) with cosine-free Fourier noise embedding, class embedding, pre-activation residual
blocks, attention at 16² and 8², concatenated skips, and a learned per-σ uncertainty u(σ) that weights
the loss (``EDM2Precond.logvar``).

Presets XS … XXL are the paper's ImageNet-512 latent models (4×64×64 inputs, 1000 classes); their
parameter counts match the paper's within 1 % (tests build them on the meta device). ``tiny`` is a
CPU-sized model of the same structure.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ambient_bench.diffusion.edm import preconditioning
from ambient_bench.diffusion.mp_layers import MPConv, MPFourier, mp_cat, mp_silu, mp_sum, normalize, resample

# channels per preset; the rest of the architecture is shared (EDM2 Table 2 / config presets)
EDM2_PRESETS: dict[str, dict[str, Any]] = {
    "xs": {"model_channels": 128, "dropout": 0.0},
    "s": {"model_channels": 192, "dropout": 0.0},
    "m": {"model_channels": 256, "dropout": 0.1},
    "l": {"model_channels": 320, "dropout": 0.1},
    "xl": {"model_channels": 384, "dropout": 0.1},
    "xxl": {"model_channels": 448, "dropout": 0.1},
    "tiny": {"model_channels": 16, "channel_mult": (1, 2), "num_blocks": 1, "attn_resolutions": (4,)},
}
# the paper's parameter counts (millions), for the preset test
EDM2_PAPER_MPARAMS = {"xs": 125, "s": 280, "m": 498, "l": 777, "xl": 1119, "xxl": 1523}
EDM2_DEFAULTS: dict[str, Any] = {"channel_mult": (1, 2, 3, 4), "num_blocks": 3, "attn_resolutions": (16, 8),
                                 "dropout": 0.0, "label_balance": 0.5, "concat_balance": 0.5}


class Block(nn.Module):
    """Pre-activation residual block: [resample] → (enc: pixel-norm) → conv-silu·(emb gain) → conv, mp_sum,
    optional self-attention with normalised q, k, v (cosine attention)."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, flavor: str, resample_mode: str = "keep",
                 attention: bool = False, channels_per_head: int = 64, dropout: float = 0.0,
                 res_balance: float = 0.3, attn_balance: float = 0.3, clip_act: float = 256) -> None:
        super().__init__()
        self.out_channels, self.flavor, self.resample_mode = out_channels, flavor, resample_mode
        # heads of channels_per_head channels (at least one, dividing the channels: small CPU widths)
        heads = max(1, out_channels // channels_per_head)
        while out_channels % heads:
            heads -= 1
        self.num_heads = heads if attention else 0
        self.dropout, self.res_balance, self.attn_balance, self.clip_act = dropout, res_balance, attn_balance, clip_act
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(out_channels if flavor == "enc" else in_channels, out_channels, (3, 3))
        self.emb_linear = MPConv(emb_channels, out_channels, ())
        self.conv_res1 = MPConv(out_channels, out_channels, (3, 3))
        self.conv_skip = MPConv(in_channels, out_channels, (1, 1)) if in_channels != out_channels else None
        self.attn_qkv = MPConv(out_channels, out_channels * 3, (1, 1)) if attention else None
        self.attn_proj = MPConv(out_channels, out_channels, (1, 1)) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = resample(x, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=[1])  # pixel norm: each position's channel vector to unit mean square
        y = self.conv_res0(mp_silu(x))
        scale = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = mp_silu(y * scale[:, :, None, None].to(y.dtype))
        if self.training and self.dropout:
            y = nn.functional.dropout(y, p=self.dropout)
        y = self.conv_res1(y)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, t=self.res_balance)
        if self.num_heads:
            n, c, h, w = x.shape
            qkv = self.attn_qkv(x).reshape(n, self.num_heads, -1, 3, h * w)
            q, k, v = normalize(qkv, dim=[2]).unbind(3)
            attn = torch.einsum("nhcq,nhck->nhqk", q, k / math.sqrt(q.shape[2])).softmax(dim=3)
            y = self.attn_proj(torch.einsum("nhqk,nhck->nhcq", attn, v).reshape(n, c, h, w))
            x = mp_sum(x, y, t=self.attn_balance)
        if self.clip_act is not None:
            x = x.clamp(-self.clip_act, self.clip_act)
        return x


class EDM2UNet(nn.Module):
    """F_θ(x, c_noise, class): the EDM2 U-Net. Input gets a constant-ones channel so the first conv can
    learn a bias; the output conv's gain starts at 0 (the network starts as D = c_skip·x)."""

    def __init__(self, img_channels: int, resolution: int, label_dim: int = 0, model_channels: int = 128,
                 channel_mult: Sequence[int] = (1, 2, 3, 4), num_blocks: int = 3,
                 attn_resolutions: Sequence[int] = (16, 8), dropout: float = 0.0, label_balance: float = 0.5,
                 concat_balance: float = 0.5) -> None:
        super().__init__()
        channels = [model_channels * m for m in channel_mult]
        noise_channels, emb_channels = model_channels, model_channels * max(channel_mult)
        self.label_dim, self.augment_dim = label_dim, 0
        self.label_balance, self.concat_balance = label_balance, concat_balance
        self.out_gain = nn.Parameter(torch.zeros([]))
        self.emb_fourier = MPFourier(noise_channels)
        self.emb_noise = MPConv(noise_channels, emb_channels, ())
        self.emb_label = MPConv(label_dim, emb_channels, ()) if label_dim else None
        self.enc = nn.ModuleDict()
        cout = img_channels + 1
        for level, width in enumerate(channels):
            res = resolution >> level
            if level == 0:
                cin, cout = cout, width
                self.enc[f"{res}x{res}_conv"] = MPConv(cin, cout, (3, 3))
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, emb_channels, "enc", "down", dropout=dropout)
            for idx in range(num_blocks):
                cin, cout = cout, width
                self.enc[f"{res}x{res}_block{idx}"] = Block(cin, cout, emb_channels, "enc", dropout=dropout,
                                                            attention=res in attn_resolutions)
        skips = [block.out_channels for block in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, width in reversed(list(enumerate(channels))):
            res = resolution >> level
            if level == len(channels) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, emb_channels, "dec", attention=True, dropout=dropout)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, emb_channels, "dec", dropout=dropout)
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, emb_channels, "dec", "up", dropout=dropout)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), width
                self.dec[f"{res}x{res}_block{idx}"] = Block(cin, cout, emb_channels, "dec", dropout=dropout,
                                                            attention=res in attn_resolutions)
        self.out_conv = MPConv(cout, img_channels, (3, 3))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.emb_noise(self.emb_fourier(c_noise))
        if self.emb_label is not None:
            labels = class_labels if class_labels is not None else torch.zeros(len(x), self.label_dim, device=x.device)
            emb = mp_sum(emb, self.emb_label(labels * math.sqrt(labels.shape[1])), t=self.label_balance)
        emb = mp_silu(emb)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for block in self.enc.values():
            x = block(x) if isinstance(block, MPConv) else block(x, emb)
            skips.append(x)
        for name, block in self.dec.items():
            if "block" in name:
                x = mp_cat(x, skips.pop(), t=self.concat_balance)
            x = block(x, emb)
        return self.out_conv(x, gain=self.out_gain)


class EDM2Precond(nn.Module):
    """EDM preconditioning around the EDM2 U-Net, plus the learned uncertainty u(σ) (``logvar``) that
    weights the loss as w(σ)/e^u·L + u (EDM2 §5, "loss weighting")."""

    def __init__(self, net: EDM2UNet, sigma_data: float = 0.5, logvar_channels: int = 128) -> None:
        super().__init__()
        self.net, self.sigma_data = net, sigma_data
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, ())

    @property
    def label_dim(self) -> int:
        return self.net.label_dim

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, augment_labels: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None, return_logvar: bool = False) -> Any:
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in, c_noise = preconditioning(sigma, self.sigma_data)
        out = c_skip * x.to(torch.float32) + c_out * self.net(c_in * x, c_noise, class_labels).to(torch.float32)
        if return_logvar:
            return out, self.logvar(sigma)
        return out

    def logvar(self, sigma: torch.Tensor) -> torch.Tensor:
        """u(σ), one per sample, shaped N×1×1×1."""
        return self.logvar_linear(self.logvar_fourier(sigma.flatten().log() / 4)).reshape(-1, 1, 1, 1)


def edm2_architecture(net_cfg: dict[str, Any]) -> dict[str, Any]:
    """The preset's architecture (``net_cfg['preset']``, default xs) with given non-null keys replacing it."""
    preset = net_cfg.get("preset") or "xs"
    if preset not in EDM2_PRESETS:
        from ambient_bench.errors import UserError
        from ambient_bench.params import suggest

        raise UserError(f"network.preset: unknown EDM2 preset {preset!r}{suggest(preset, list(EDM2_PRESETS))} "
                        f"(one of {', '.join(EDM2_PRESETS)})")
    arch = {**EDM2_DEFAULTS, **EDM2_PRESETS[preset]}
    arch.update({k: v for k, v in net_cfg.items() if k in EDM2_DEFAULTS or k == "model_channels"
                 if v is not None})
    return arch


def build_edm2(net_cfg: dict[str, Any], img_channels: int, resolution: int, label_dim: int = 0,
               sigma_data: float = 0.5) -> EDM2Precond:
    return EDM2Precond(EDM2UNet(img_channels, resolution, label_dim, **edm2_architecture(net_cfg)), sigma_data)
