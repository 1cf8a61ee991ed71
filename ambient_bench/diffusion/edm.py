"""EDM preconditioning (Karras et al., 2022): D(x, sigma) = c_skip x + c_out F(c_in x, ln(sigma)/4)."""
from __future__ import annotations

import torch
from torch import nn


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
        sigma = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sigma ** 2 + sd2).sqrt()
        c_noise = sigma.log().flatten() / 4
        # only what is given: a plain F(x, c_noise) network (e.g. a user's) needs no label arguments
        extra = {k: v for k, v in (("augment_labels", augment_labels), ("class_labels", class_labels))
                 if v is not None}
        return c_skip * x + c_out * self.net(c_in * x, c_noise, **extra)
