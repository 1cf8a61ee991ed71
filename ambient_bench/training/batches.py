"""The training loop's batches: drawn from the sample stream, pixels from memory or from disk.

Step k's draw (indices and noise levels of the whole global batch) comes from the stream and
the (seed, k) generator, whatever holds the pixels. A training set held in memory is indexed
directly. A streamed one (``data/pool.py``: the pool too large for memory) is read through a
``torch.utils.data.DataLoader`` whose batch sampler is the stream itself, so worker processes
decode, corrupt and draw Z_i for the next batches while the network trains on this one. The
sampler runs ahead of training, so each batch carries the stream's state after its own draw:
that, not the stream's current position, is what a checkpoint stores. Under torchrun a rank
reads only its slice of the global batch (the whole batch when augmentation, which draws per
position of the global batch, needs it).
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ambient_bench.data.images import uint8_to_model
from ambient_bench.seeding import numpy_rng
from ambient_bench.training.stream import AdmissibleStream


@dataclass
class Batch:
    step: int
    indices: np.ndarray        # training-set rows of the global batch
    sigmas: np.ndarray         # their noise levels
    x0: torch.Tensor           # model-space images: the global batch if ``whole``, else this rank's slice
    z: torch.Tensor            # fixed noise Z_i of this rank's slice
    stream_state: dict[str, int]


def _draw(stream: AdmissibleStream, cfg: dict[str, Any], step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = numpy_rng("sigma", cfg["seed"], step)
    return stream.batch(lambda: math.exp(cfg["P_mean"] + cfg["P_std"] * rng.standard_normal()), cfg["batch"])


def in_memory(images: torch.Tensor, noise: torch.Tensor, stream: AdmissibleStream, cfg: dict[str, Any],
              steps: range, mine: slice, whole: bool, device: torch.device) -> Iterator[Batch]:
    x_all, z_all = uint8_to_model(images).to(device), noise.float().to(device)
    for step in steps:
        indices, sigmas = _draw(stream, cfg, step)
        rows = torch.from_numpy(indices if whole else indices[mine]).to(device)
        yield Batch(step, indices, sigmas, x_all[rows], z_all[torch.from_numpy(indices[mine]).to(device)],
                    stream.state_dict())


class _TrainRows(torch.utils.data.Dataset):
    """Training-set row i → (image, Z) of its pool row."""

    def __init__(self, pool_images: Any, pool_rows: torch.Tensor) -> None:
        self.pool_images, self.pool_rows = pool_images, pool_rows

    def __len__(self) -> int:
        return len(self.pool_rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool_images[int(self.pool_rows[i])]


class _StreamSampler:
    """The DataLoader's batch sampler: step after step, the rows this rank reads; each draw is queued
    with its step, noise levels and the stream's state, for the loop to pick up with the pixels."""

    def __init__(self, stream: AdmissibleStream, cfg: dict[str, Any], steps: range, mine: slice,
                 whole: bool) -> None:
        self.stream, self.cfg, self.steps, self.mine, self.whole = stream, cfg, steps, mine, whole
        self.drawn: collections.deque = collections.deque()

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.steps:
            indices, sigmas = _draw(self.stream, self.cfg, step)
            self.drawn.append((step, indices, sigmas, self.stream.state_dict()))
            yield (indices if self.whole else indices[self.mine]).tolist()

    def __len__(self) -> int:
        return len(self.steps)


def streamed(pool_images: Any, pool_rows: torch.Tensor, stream: AdmissibleStream, cfg: dict[str, Any],
             steps: range, mine: slice, whole: bool, device: torch.device, workers: int) -> Iterator[Batch]:
    sampler = _StreamSampler(stream, cfg, steps, mine, whole)
    loader = torch.utils.data.DataLoader(_TrainRows(pool_images, pool_rows), batch_sampler=sampler,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         prefetch_factor=2 if workers else None)
    for images, noise in loader:
        step, indices, sigmas, state = sampler.drawn.popleft()
        z = noise[mine] if whole else noise
        # converted on the CPU, as the in-memory path does: the same floats on every device
        yield Batch(step, indices, sigmas, uint8_to_model(images).to(device), z.float().to(device), state)
