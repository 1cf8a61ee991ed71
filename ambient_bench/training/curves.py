"""Training curves beyond stats.jsonl: the loss per noise-level bin, the gradient norm, and TensorBoard
event files (``tensorboard/`` beside stats.jsonl) when the optional ``tensorboard`` package is installed.

The loss of a diffusion model mixes very different noise levels; its mean hides which ones are still
learning. Between two log lines the per-sample losses are summed in fixed bins of σ (EDM's range
split at 0.02, 0.1, 0.5, 2 and 10) and the bin means are logged with the step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SIGMA_EDGES = (0.02, 0.1, 0.5, 2.0, 10.0)  # bins: below 0.02, 0.02-0.1, ..., above 10
BIN_NAMES = ("<0.02", "0.02-0.1", "0.1-0.5", "0.5-2", "2-10", ">10")


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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
