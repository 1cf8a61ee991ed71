"""Training curves beyond stats.jsonl: the loss per noise-level bin, the gradient norm, and TensorBoard
event files (``tensorboard/`` beside stats.jsonl) when the optional ``tensorboard`` package is installed.

The loss of a diffusion model mixes very different noise levels; its mean hides which ones are still
learning. Between two log lines the per-sample losses are summed in fixed bins of σ (EDM's range
split at 0.02, 0.1, 0.5, 2 and 10) and the bin means are logged with the step.

The training loss is the raw network's, on fresh noise at random σ: noisy, and not the model that gets
sampled. At every checkpoint and EMA snapshot ``ema_denoising_error`` scores the EMA weights instead, on
the same clean training images with the same noise each time, at one σ inside each bin: a curve whose
changes are the model's alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ambient_bench.data.images import uint8_to_model

SIGMA_EDGES = (0.02, 0.1, 0.5, 2.0, 10.0)  # bins: below 0.02, 0.02-0.1, ..., above 10
BIN_NAMES = ("<0.02", "0.02-0.1", "0.1-0.5", "0.5-2", "2-10", ">10")
PROBE_SIGMAS = (0.01, 0.045, 0.22, 1.0, 4.5, 20.0)  # one noise level inside each bin, for the EMA probe
PROBE_IMAGES = 32


@torch.no_grad()
def ema_denoising_error(ema: torch.nn.Module, x0: torch.Tensor, class_labels: torch.Tensor | None,
                        sigma_data: float, seed: int) -> dict[str, Any]:
    """The EDM-weighted denoising error (summed over pixels, mean over images) of ``ema`` on the images
    ``x0`` at each of ``PROBE_SIGMAS``, the noise drawn from ``seed`` (the same at every call)."""
    generator = torch.Generator().manual_seed(seed)
    errors = {}
    for name, level in zip(BIN_NAMES, PROBE_SIGMAS):
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        sigma = torch.full((len(x0),), level, device=x0.device)
        denoised = ema(x0 + level * noise, sigma, class_labels=class_labels).float()
        weight = (level ** 2 + sigma_data ** 2) / (level * sigma_data) ** 2
        errors[name] = float((weight * (denoised - x0.float()) ** 2).flatten(1).sum(1).mean())
    return {"ema_loss": sum(errors.values()) / len(errors), "ema_loss_by_sigma": errors}


def ema_probe(ema: torch.nn.Module, images: torch.Tensor, sigma_min: torch.Tensor, classes: torch.Tensor | None,
              sigma_data: float, seed: int, device: torch.device) -> Callable[[], dict[str, Any]]:
    """``ema_denoising_error`` of ``ema`` as it is when called, on the ``PROBE_IMAGES`` most trusted training
    images (uint8 ``images``; the lowest ``sigma_min`` first: the clean ones) with their class labels."""
    rows = torch.argsort(sigma_min, stable=True)[:PROBE_IMAGES]
    x0 = uint8_to_model(images[rows]).to(device)
    labels = None if classes is None else classes[rows.to(classes.device)]
    return lambda: ema_denoising_error(ema, x0, labels, sigma_data, seed)


def summary_writer(run_dir: Path) -> Any:
    """A TensorBoard SummaryWriter in ``run_dir/tensorboard``, or None without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional extra is not installed: stats.jsonl alone
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


class Curves:
    """Accumulates per-σ-bin losses between log lines; writes scalars to TensorBoard when it can."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.writer = summary_writer(run_dir) if enabled else None
        self.sums = torch.zeros(len(BIN_NAMES), dtype=torch.float64)
        self.counts = torch.zeros(len(BIN_NAMES), dtype=torch.float64)

    def add(self, sigma: torch.Tensor, per_sample: torch.Tensor) -> None:
        sigma = sigma.detach().double().cpu().flatten()
        loss = per_sample.detach().double().cpu().reshape(len(sigma), -1).mean(dim=1)
        bins = torch.bucketize(sigma, torch.tensor(SIGMA_EDGES, dtype=torch.float64))
        self.sums.index_add_(0, bins, loss)
        self.counts.index_add_(0, bins, torch.ones_like(loss))

    def flush(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Stats for this log line (the bin means since the last one), also written to TensorBoard."""
        bins = {name: float(s / c) for name, s, c in zip(BIN_NAMES, self.sums, self.counts) if c > 0}
        self.sums.zero_()
        self.counts.zero_()
        extra = {"loss_by_sigma": bins} if bins else {}
        if self.writer is not None:
            step = stats["step"]
            for name in ("loss", "lr", "grad_norm", "sec_per_step"):
                if stats.get(name) is not None:
                    self.writer.add_scalar(f"train/{name}", stats[name], step)
            for name, value in bins.items():
                self.writer.add_scalar(f"loss_by_sigma/{name}", value, step)
            self.writer.flush()
        return extra

    def ema(self, probe: dict[str, Any]) -> None:
        """Write an ``ema_denoising_error`` result (with its ``step``) to TensorBoard."""
        if self.writer is not None:
            self.writer.add_scalar("ema/loss", probe["ema_loss"], probe["step"])
            for name, value in probe["ema_loss_by_sigma"].items():
                self.writer.add_scalar(f"ema_loss_by_sigma/{name}", value, probe["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
