"""EDM preconditioning (Karras et al., 2022): D(x, sigma) = c_skip x + c_out F(c_in x, ln(sigma)/4)."""
from __future__ import annotations

import torch
from torch import nn


def preconditioning(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) of EDM's Table 1 for σ shaped N×1×1×1 (c_noise flat, N)."""
    sd2 = sigma_data ** 2
    c_skip = sd2 / (sigma ** 2 + sd2)
    c_out = sigma * sigma_data / (sigma ** 2 + sd2).sqrt()
    c_in = 1 / (sigma ** 2 + sd2).sqrt()
    return c_skip, c_out, c_in, sigma.log().flatten() / 4


class EDMPrecond(nn.Module):
    def __init__(self, net: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.net, self.sigma_data = net, sigma_data

    @property
    def label_dim(self) -> int:
        """Number of classes of a class-conditional network (0: unconditional)."""
        return getattr(getattr(self.net, "embed", None), "label_dim", 0)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, augment_labels: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        c_skip, c_out, c_in, c_noise = preconditioning(sigma.to(x.dtype).reshape(-1, 1, 1, 1), self.sigma_data)
        # only what is given: a plain F(x, c_noise) network (e.g. a user's) needs no label arguments
        extra = {k: v for k, v in (("augment_labels", augment_labels), ("class_labels", class_labels))
                 if v is not None}
        return c_skip * x + c_out * self.net(c_in * x, c_noise, **extra)
