"""Measure how much context a trained denoiser needs at each noise level (paper Figs. 16-19).

The crops annotation (``crops.py``) admits an out-of-distribution image below ``sigma_max =
table[K*]``: below that noise level the denoiser is assumed to look at no more than K×K pixels,
so K×K crops that pass for the target distribution are as good as target images. The release
hard-codes that table at 64 px; this module measures it from a trained network, so it can be
derived for any dataset and resolution.

Measurement. Clean images x0 (uint8 N×C×H×W, H = W even, mapped to model space [-1, 1]),
noise levels sigma_s and even context sizes c (2 ≤ c ≤ H):

* x_t = x0 + sigma·eps, eps ~ N(0, I) seeded by (seed, trial) only, so every sigma and every
  context sees the same eps (common random numbers: loss differences between contexts are far
  less noisy than the losses themselves).
* The network sees x_t only inside the c×c window W_c = [H/2 − c/2, H/2 + c/2)², whose centre is
  the centre of the 2×2 patch P = [H/2 − 1, H/2 + 1)². Outside W_c the input is a fixed fill:
  ``zero`` (default) = 0 in model space, i.e. mid grey without noise, the same zero canvas the
  crops classifiers are trained and annotated on, so "context c" means the same thing for the
  probe and for the classifier that uses the table; ``noise`` = pure N(0, sigma_data² + sigma²),
  the marginal statistics of x_t, which hides the window edge from the network.
* loss(sigma, c) = mean over images, trials and P's C×2×2 values of (D(x_t masked, sigma) − x0)².
* The reference is the full context c = H (always probed). plateau_context(sigma) = the smallest
  c with loss(sigma, c) ≤ loss(sigma, H) + tol (absolute, default 1e-3, the paper's "within
  ε = 1e-3 of the optimal loss") or ≤ loss(sigma, H)·(1 + tol) with ``relative=True``.
* crop_sigma_table inverts it: sigma_max(K) = the largest probed sigma such that every probed
  sigma' ≤ sigma has plateau_context ≤ K (0 if none). Requiring it for all smaller sigma' (not
  just sigma itself) matters because the annotation admits the image at *every* sigma < sigma_max;
  with a plateau that grows with sigma the two definitions agree, and the result is monotone
  non-decreasing in K either way.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ambient_bench import fileio
from ambient_bench.data.images import uint8_to_model
from ambient_bench.seeding import torch_generator

FILLS = ("zero", "noise")


def plateau_contexts(losses: np.ndarray, context_sizes: Sequence[int], tol: float = 1e-3,
                     relative: bool = False) -> np.ndarray:
    """(S,) smallest context whose loss is within ``tol`` of the largest context's loss."""
    losses, sizes = np.asarray(losses, float), np.asarray(context_sizes)
    order = np.argsort(sizes)
    losses, sizes = losses[:, order], sizes[order]
    ref = losses[:, -1:]
    ok = losses <= (ref * (1 + tol) if relative else ref + tol)  # the last column always passes
    return sizes[np.argmax(ok, axis=1)].astype(int)


def crop_sigma_table(sigmas: Sequence[float], plateau_context: Sequence[float],
                     crop_sizes: Sequence[int]) -> dict[int, float]:
    """crop size K → sigma_max(K): the largest probed sigma below which (inclusive) every probed
    sigma needs at most K pixels of context; 0.0 where even the smallest sigma needs more."""
    sigmas, plateau = np.asarray(sigmas, float), np.asarray(plateau_context, float)
    if sigmas.shape != plateau.shape:
        raise ValueError(f"sigmas {sigmas.shape} and plateau_context {plateau.shape} differ")
    order = np.argsort(sigmas)
    needed = np.maximum.accumulate(np.nan_to_num(plateau[order], nan=np.inf))  # for all sigma' ≤ sigma
    table = {}
    for k in sorted(int(k) for k in crop_sizes):
        ok = needed <= k  # a prefix, since ``needed`` is non-decreasing
        table[k] = float(sigmas[order][ok].max()) if ok.any() else 0.0
    return table


@dataclass(frozen=True)
class ContextProbe:
    """Result of :func:`probe_context`: losses S×C (sigma × ascending context size)."""

    sigmas: np.ndarray
    context_sizes: np.ndarray
    losses: np.ndarray
    plateau_context: np.ndarray
    resolution: int
    tol: float = 1e-3
    relative: bool = False
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def with_tol(self, tol: float, relative: bool = False) -> ContextProbe:
        """The same losses with plateaus recomputed for another tolerance (no re-probing)."""
        return dataclasses.replace(self, tol=tol, relative=relative,
                                   plateau_context=plateau_contexts(self.losses, self.context_sizes, tol, relative))

    def table(self, crop_sizes: Sequence[int]) -> dict[int, float]:
        return crop_sigma_table(self.sigmas, self.plateau_context, crop_sizes)

    def to_json(self) -> dict[str, Any]:
        return {"sigmas": self.sigmas.tolist(), "context_sizes": self.context_sizes.tolist(),
                "losses": self.losses.tolist(), "plateau_context": self.plateau_context.tolist(),
                "resolution": self.resolution, "tol": self.tol, "relative": self.relative, **self.meta}


def save_probe(probe: ContextProbe, path: Path | str) -> Path:
    fileio.write_json(Path(path), probe.to_json())
    return Path(path)


def load_probe(path: Path | str) -> ContextProbe:
    d = json.loads(Path(path).read_text())
    fields = {"sigmas", "context_sizes", "losses", "plateau_context", "resolution", "tol", "relative"}
    return ContextProbe(np.asarray(d["sigmas"], float), np.asarray(d["context_sizes"], int),
                        np.asarray(d["losses"], float), np.asarray(d["plateau_context"], int),
                        int(d["resolution"]), float(d["tol"]), bool(d["relative"]),
                        {k: v for k, v in d.items() if k not in fields})


def _device_of(net: torch.nn.Module) -> torch.device:
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def probe_context(net: torch.nn.Module, images_uint8: torch.Tensor, sigmas: Sequence[float],
                  context_sizes: Sequence[int], *, trials: int = 2, seed: int = 0, batch: int = 512,
                  fill: str = "zero", tol: float = 1e-3, relative: bool = False) -> ContextProbe:
    """Centre-patch loss of ``net(x, sigma)`` for every sigma × context size (see module docstring).

    All N × C masked inputs of one (sigma, trial) are evaluated in chunks of ``batch`` by flat
    index, so no Python loop runs over images. Noise is drawn on the CPU from named seeds, so the
    result depends only on ``seed`` (not on the device or ``batch``, up to float round-off).
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
        raise ValueError(f"images must be uint8 N×C×H×W, got {images_uint8.dtype} {tuple(images_uint8.shape)}")
    n, channels, h, w = images_uint8.shape
    if h != w or h % 2:
        raise ValueError(f"the probe needs square images of even size, got {h}×{w}")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    sizes = sorted({int(c) for c in context_sizes} | {h})
    if any(c < 2 or c > h or c % 2 for c in sizes):
        raise ValueError(f"context sizes must be even and in [2, {h}], got {sorted(context_sizes)}")
    sigma_list = [float(s) for s in sigmas]
    if not sigma_list or min(sigma_list) <= 0:
        raise ValueError(f"sigmas must be a non-empty list of positive numbers, got {sigma_list}")
    device, sigma_data = _device_of(net), float(getattr(net, "sigma_data", 0.5))
    x0 = uint8_to_model(images_uint8).to(device)
    coords, mid = torch.arange(h, device=device), h // 2
    inside = torch.stack([(coords >= mid - c // 2) & (coords < mid + c // 2) for c in sizes])  # C×H
    masks = (inside[:, :, None] & inside[:, None, :])[:, None]  # C×1×H×W
    total = n * len(sizes)
    losses = np.zeros((len(sigma_list), len(sizes)))
    for trial in range(trials):
        eps = torch.randn(x0.shape, generator=torch_generator("context-probe-eps", seed, trial)).to(device)
        unit_fill = torch.randn(x0.shape, generator=torch_generator("context-probe-fill", seed, trial)).to(device)
        for i, sigma in enumerate(sigma_list):
            x_t = x0 + sigma * eps
            outside = (unit_fill * (sigma_data ** 2 + sigma ** 2) ** 0.5) if fill == "noise" else torch.zeros_like(x0)
            err = torch.empty(total, dtype=torch.float64, device=device)
            for start in range(0, total, batch):
                flat = torch.arange(start, min(start + batch, total), device=device)
                img, ctx = flat // len(sizes), flat % len(sizes)
                inputs = torch.where(masks[ctx], x_t[img], outside[img])
                out = net(inputs, torch.full((len(flat),), sigma, device=device))
                diff = (out.float() - x0[img])[:, :, mid - 1:mid + 1, mid - 1:mid + 1]
                err[start:start + len(flat)] = diff.double().pow(2).mean(dim=(1, 2, 3))
            losses[i] += err.reshape(n, len(sizes)).mean(dim=0).cpu().numpy() / trials
    sizes_arr = np.asarray(sizes, int)
    return ContextProbe(np.asarray(sigma_list), sizes_arr, losses, plateau_contexts(losses, sizes_arr, tol, relative),
                        h, tol, relative, {"count": n, "channels": channels, "trials": trials, "seed": seed,
                                           "fill": fill, "sigma_data": sigma_data})
