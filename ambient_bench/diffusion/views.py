"""Scores composed from views of the data (Bootstrapping Diffusion, Ma 2025; seed notes §2).
Reconstruction from the abstract (§2.2): a view is a known linear operator V_k of the full data (f×f
average pooling, a crop of coordinates); its own diffusion model learns the view's distribution, and
the full score is the views' scores mapped back plus a residual that carries what the views miss:

    s(x; σ) = Σ_k V_kᵀ s_k(V_k x; σ_k) + r(x; σ),    σ_k = σ·(row norm of V_k)

because the view of a noisy sample V_k(x + σε) is the view noised with covariance σ²·V_k V_kᵀ
(= (σ/f)²·I for f×f average pooling, σ²·I for a crop). In denoiser form (D = x + σ²·s):

    D(x; σ) = x + σ²·[Σ_k V_kᵀ (D_k(V_k x; σ_k) - V_k x)/σ_k² + r(x; σ)]

This module holds the operators and the composition; the ``views`` package says which view a method
uses, ``objectives/views_residual.py`` trains the residual.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AveragePool:
    """V: f×f average pooling of N×C×H×W images (a low-resolution view); V Vᵀ = I/f²."""

    factor: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.factor)

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        """Vᵀ: each low-resolution pixel spread over its f×f block, divided by f²."""
        return F.interpolate(v, scale_factor=self.factor, mode="nearest") / self.factor ** 2

    @property
    def noise_scale(self) -> float:
        """The row norm of V: a view of x + σε carries noise σ·noise_scale."""
        return 1.0 / self.factor


@dataclass(frozen=True)
class Crop:
    """V: the coordinates ``index`` of flattened samples (a crop, a short clip); V Vᵀ = I."""

    index: tuple[int, ...]
    size: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, list(self.index)]

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(v), self.size, dtype=v.dtype, device=v.device)
        out[:, list(self.index)] = v
        return out

    @property
    def noise_scale(self) -> float:
        return 1.0


@dataclass(frozen=True)
class GridCell:
    """V: cell ``cell`` (row-major) of a ``grid``×``grid`` partition of N×C×H×W images (a disjoint crop);
    V Vᵀ = I. H and W must be multiples of ``grid`` (every cell has one shape, for one view model)."""

    grid: int
    cell: int

    def _bounds(self, h: int, w: int) -> tuple[slice, slice]:
        row, col = divmod(self.cell, self.grid)
        hs, ws = h // self.grid, w // self.grid
        return slice(row * hs, (row + 1) * hs), slice(col * ws, (col + 1) * ws)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = self._bounds(*x.shape[-2:])
        return x[..., rows, cols]

    def adjoint(self, v: torch.Tensor) -> torch.Tensor:
        h, w = v.shape[-2] * self.grid, v.shape[-1] * self.grid
        out = v.new_zeros(*v.shape[:-2], h, w)
        rows, cols = self._bounds(h, w)
        out[..., rows, cols] = v
        return out

    @property
    def noise_scale(self) -> float:
        return 1.0


class AtPosition(torch.nn.Module):
    """A crop view model conditioned on the crop's position (its class label): cells differ in content
    (a digit's corner is not its centre), so each V_k gets its own s_k from one shared network."""

    def __init__(self, net: torch.nn.Module, cell: int, cells: int) -> None:
        super().__init__()
        self.net, self.cell, self.cells = net, cell, cells

    def forward(self, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        label = torch.zeros(len(v), self.cells, device=v.device)
        label[:, self.cell] = 1
        return self.net(v, sigma, class_labels=label)


def view_pairs(spec: dict[str, int], net: torch.nn.Module) -> list[tuple["AveragePool | GridCell", torch.nn.Module]]:
    """(operator, denoiser) pairs of one view model, from the view stage's spec: ``{"factor": f}`` (one
    pooled view) or ``{"grid": g}`` (g² disjoint crops, one network told the position)."""
    if "grid" in spec:
        cells = spec["grid"] ** 2
        return [(GridCell(spec["grid"], k), AtPosition(net, k, cells)) for k in range(cells)]
    return [(AveragePool(spec["factor"]), net)]


ViewDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def composite_score(x: torch.Tensor, sigma: torch.Tensor,
                    views: Sequence[tuple[AveragePool | Crop | GridCell, ViewDenoiser]],
                    residual: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_k V_kᵀ s_k(V_k x; σ_k) (+ the residual score), each view's score from its denoiser."""
    total = torch.zeros_like(x) if residual is None else residual.clone()
    for op, denoise in views:
        v = op.apply(x)
        sigma_k = sigma * op.noise_scale
        shape = (-1,) + (1,) * (v.dim() - 1)
        total = total + op.adjoint((denoise(v, sigma_k) - v) / sigma_k.reshape(shape) ** 2).reshape(x.shape)
    return total


def composite_denoiser(x: torch.Tensor, sigma: torch.Tensor,
                       views: Sequence[tuple[AveragePool | Crop | GridCell, ViewDenoiser]],
                       residual: torch.Tensor | None = None) -> torch.Tensor:
    """D(x; σ) = x + σ²·composite score (the form an EDM sampler consumes)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return x + sigma.reshape(shape) ** 2 * composite_score(x, sigma, views, residual)


class ComposedDenoiser(torch.nn.Module):
    """A residual network whose own denoiser supplies r (r = (D_net - x)/σ²) and frozen view networks the
    rest: D(x; σ) = D_net(x; σ) + σ²·Σ_k V_kᵀ s_k(V_k x; σ_k). What the sampler sees of a bootstrap_views model."""

    def __init__(self, residual: torch.nn.Module,
                 views: Sequence[tuple[AveragePool | GridCell, torch.nn.Module]]) -> None:
        super().__init__()
        self.residual = residual
        self.view_nets = torch.nn.ModuleList([net for _, net in views])
        self.ops = [op for op, _ in views]
        self.label_dim = getattr(residual, "label_dim", 0)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, augment_labels: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        sigma = sigma.reshape(-1).expand(len(x)) if sigma.numel() == 1 else sigma.reshape(-1)
        own = self.residual(x, sigma, augment_labels=augment_labels, class_labels=class_labels)
        return own + sigma.reshape(-1, 1, 1, 1) ** 2 * composite_score(x, sigma, list(zip(self.ops, self.view_nets)))
