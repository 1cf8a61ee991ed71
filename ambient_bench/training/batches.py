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
from ambient_bench.seeding import numpy_rng, torch_generator
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
    rows = iter(loader)
    try:
        for images, noise in rows:
            step, indices, sigmas, state = sampler.drawn.popleft()
            z = noise[mine] if whole else noise
            # converted on the CPU, as the in-memory path does: the same floats on every device
            yield Batch(step, indices, sigmas, uint8_to_model(images).to(device), z.float().to(device), state)
    finally:  # closed (training.loop closes it): the workers and the pin-memory thread stop now, not at exit
        stop = getattr(rows, "_shutdown_workers", None)  # the multi-process iterator's own clean-up
        if stop is not None:
            stop()


def from_latents(shards: Any, pool_rows: torch.Tensor, index: torch.Tensor, stream: AdmissibleStream,
                 cfg: dict[str, Any], steps: range, mine: slice, whole: bool, device: torch.device) -> Iterator[Batch]:
    """Batches of VAE latents read row by row from the shards (``latents/shards.py``), never all in memory.

    A training sample is the encoder's mean + std·ε (ε and the mirror choice seeded by (seed, step)),
    scaled to the network's range; Z_i is fixed per image (seeded by its dataset index), in latent shape.
    """
    from ambient_bench.latents.vae import to_model

    raw_mean, raw_std = shards.raw_stats()
    shape = tuple(shards.meta["shape"])
    mirrored = "mean_flip" in shards.names
    for step in steps:
        indices, sigmas = _draw(stream, cfg, step)
        take = indices if whole else indices[mine]
        got = shards.read(pool_rows[torch.from_numpy(take)].numpy())
        g = torch_generator("latent-sample", cfg["seed"], step)
        mean, std = got["mean"], got["std"]
        if mirrored:
            flip = (torch.rand(len(take), generator=g) < 0.5).reshape(-1, 1, 1, 1)
            mean, std = torch.where(flip, got["mean_flip"], mean), torch.where(flip, got["std_flip"], std)
        x0 = to_model(mean + std * torch.randn(mean.shape, generator=g), raw_mean, raw_std)
        own = indices[mine]
        z = torch.stack([torch.randn(shape, generator=torch_generator("latent-z", int(index[i]))) for i in own])
        yield Batch(step, indices, sigmas, x0.to(device), z.to(device), stream.state_dict())
