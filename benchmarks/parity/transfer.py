"""Weights of a peer's network written into ours, by a name and shape mapping (no peer code is copied).

``randomize`` first replaces every parameter of the peer's network by a random value of the layer's
scale: the peers' initialisations zero the output layers and biases (EDM scales them by 1e-5, EDM2 starts
its gains at 0), which would make D = c_skip·x for both networks and hide every difference after the skip.

DDPM++ (EDM's ``SongUNet``, the release's ``SongHalfUNet``) differs from ours in three layouts, mapped here:
- the noise embedding: EDM concatenates [sin, cos] (it swaps the halves), ours [cos, sin], so the columns
  of the first mapping layer and the rows of the label / augment maps are permuted by half the width;
- class labels: EDM multiplies them by √label_dim and its label map has a bias; ours has neither, so the
  weights are scaled by √label_dim and the bias is folded into the first mapping layer's bias;
- attention: EDM's qkv output channels interleave (q, k, v) per channel, ours are three blocks.
"""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def randomize(module: nn.Module, seed: int = 0) -> None:
    """Every parameter random: matrices and kernels N(0, 1/fan_in), 1-D (biases, norm gains) around their
    neutral value, scalars (EDM2 gains) in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        elif p.ndim == 1:
            centre = 1.0 if name.endswith("norm0.weight") or name.endswith("norm1.weight") or \
                name.endswith("norm2.weight") or name.endswith("aux_norm.weight") else 0.0
            p.copy_(centre + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.5 + torch.rand((), generator=g))


def _half_swap(width: int) -> torch.Tensor:
    """Index into the peer's [sin, cos] embedding for each position of ours [cos, sin]."""
    half = width // 2
    return torch.cat([torch.arange(half, width), torch.arange(half)])


def _block(theirs: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """One EDM ``UNetBlock`` (DDPM++ settings) as our ``UNetBlock``'s state dict."""
    out: dict[str, torch.Tensor] = {}
    for name in ("norm0", "conv0", "affine", "norm1", "conv1", "skip", "norm2", "proj"):
        layer = getattr(theirs, name, None)
        if layer is None:
            continue
        for p in ("weight", "bias"):
            t = getattr(layer, p, None)
            if t is not None:
                out[f"{prefix}{name}.{p}"] = t.detach().clone()
    if getattr(theirs, "qkv", None) is not None:
        c = theirs.out_channels
        order = torch.arange(3 * c).reshape(c, 3).t().reshape(-1)  # ours [q..., k..., v...] from (q,k,v) per channel
        out[f"{prefix}qkv.weight"] = theirs.qkv.weight.detach()[order].clone()
        out[f"{prefix}qkv.bias"] = theirs.qkv.bias.detach()[order].clone()
    return out


def _embedding(theirs: nn.Module) -> dict[str, torch.Tensor]:
    width = theirs.map_layer0.weight.shape[1]
    swap = _half_swap(width)
    w0, b0 = theirs.map_layer0.weight.detach(), theirs.map_layer0.bias.detach()
    out = {"embed.mlp.0.weight": w0[:, swap].clone(), "embed.mlp.0.bias": b0.clone(),
           "embed.mlp.2.weight": theirs.map_layer1.weight.detach().clone(),
           "embed.mlp.2.bias": theirs.map_layer1.bias.detach().clone()}
    if theirs.map_augment is not None:
        out["embed.augment.weight"] = theirs.map_augment.weight.detach()[swap].clone()
    if theirs.map_label is not None:
        scale = math.sqrt(theirs.map_label.in_features)
        out["embed.label.weight"] = theirs.map_label.weight.detach()[swap] * scale
        if theirs.map_label.bias is not None:  # W0 (e + b_label) + b0 = W0 e + (b0 + W0 b_label)
            out["embed.mlp.0.bias"] = b0 + w0 @ theirs.map_label.bias.detach()
    return out


def _encoder(theirs: nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    blocks = [(name, block) for name, block in theirs.enc.items() if "aux" not in name]
    conv_name, conv = blocks[0]
    assert conv_name.endswith("_conv"), conv_name
    out["encoder.conv_in.weight"] = conv.weight.detach().clone()
    out["encoder.conv_in.bias"] = conv.bias.detach().clone()
    for i, (_, block) in enumerate(blocks[1:]):
        out.update(_block(block, f"encoder.blocks.{i}."))
    return out


def ddpmpp_state_dict(song_unet: nn.Module) -> dict[str, torch.Tensor]:
    """EDM's ``SongUNet`` (DDPM++: positional embedding, standard encoder/decoder) as our ``UNet``'s state dict."""
    out = {**_embedding(song_unet), **_encoder(song_unet)}
    i = 0
    for name, block in song_unet.dec.items():
        if name.endswith("aux_norm"):
            out["norm_out.weight"], out["norm_out.bias"] = block.weight.detach().clone(), block.bias.detach().clone()
        elif name.endswith("aux_conv"):
            out["conv_out.weight"], out["conv_out.bias"] = block.weight.detach().clone(), block.bias.detach().clone()
        elif "aux" in name:
            raise ValueError(f"{name}: not a DDPM++ decoder (decoder_type 'skip' has no counterpart here)")
        else:
            out.update(_block(block, f"decoder.{i}."))
            i += 1
    return out


def half_unet_state_dict(precond_cls: nn.Module) -> dict[str, torch.Tensor]:
    """The release's ``EDMPrecondCLS`` (SongHalfUNet + pooled linear head) as our ``HalfUNet``'s state dict."""
    out = {**_embedding(precond_cls.model), **_encoder(precond_cls.model)}
    head = precond_cls.classifier[-1]
    out["head.weight"], out["head.bias"] = head.weight.detach().clone(), head.bias.detach().clone()
    return out


def edm2_state_dict(precond: nn.Module) -> dict[str, torch.Tensor]:
    """EDM2's ``Precond`` (``unet.*`` and ``logvar_*``) as our ``EDM2Precond``'s state dict: the same layout."""
    out = {}
    for name, t in precond.state_dict().items():
        out[("net." + name[len("unet."):]) if name.startswith("unet.") else name] = t.detach().clone()
    return out


def load_exactly(ours: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``ours``, failing on any missing, extra or mis-shaped tensor (buffers that ours
    computes, such as the positional frequencies, are not persistent and so not expected)."""
    own = ours.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"weight mapping: missing {missing[:4]}, extra {extra[:4]}, shape mismatch {shapes[:4]}")
    ours.load_state_dict(state)
