"""Conversions between the three image conventions (see ``ambient_bench.components``)."""
from __future__ import annotations

import torch

# ITU-R 601 luma weights (those of PIL's convert("L")), for RGB → grey.
REC601 = (0.299, 0.587, 0.114)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats → uint8, rounding half up (the paper's ``x·127.5 + 128`` truncation)."""
    return (x * 255 + 0.5).floor().clamp(0, 255).to(torch.uint8)


def uint8_to_model(x: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 in [-1, 1], the diffusion model's space."""
    return x.float() / 127.5 - 1.0


def model_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-space floats → uint8, as a generated image would be saved to PNG."""
    return to_uint8((x.float() + 1.0) / 2.0)
