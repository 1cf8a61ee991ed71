"""Latents on disk: fixed-size safetensors shards of the encoder's (mean, std) per image, in pool order,
read row by row (memory-mapped slices), never loaded whole.

A shard is written atomically and once: re-running an interrupted encode keeps the finished shards
and encodes only the rest. ``meta.json`` (written last) records the count, shapes and the scaling.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ambient_bench import fileio

META = "meta.json"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def write_shards(folder: Path, count: int, shard_size: int,
                 encode: Callable[[range], dict[str, torch.Tensor]], log: Callable[[str], None] = print) -> None:
    """Encode rows [0, count) shard by shard (``encode(rows)`` → named N×... tensors), skipping finished ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, count, shard_size)):
        path = folder / shard_name(k)
        if path.exists():
            continue
        rows = range(start, min(start + shard_size, count))
        tensors = {name: value.contiguous() for name, value in encode(rows).items()}
        partial = path.with_suffix(".partial")
        save_file(tensors, str(partial))
        partial.replace(path)
        log(f"latents: shard {k} ({len(next(iter(tensors.values())))} images) written")


class LatentShards:
    """Rows of the shards in ``folder``: ``read(rows)`` returns each named tensor's rows, in order."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META).read_text())
        self.shard_size, self.count = self.meta["shard_size"], self.meta["count"]
        self.names = tuple(self.meta["tensors"])

    def __len__(self) -> int:
        return self.count

    def read(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        out = {name: torch.empty((len(rows), *self.meta["shape"]), dtype=torch.float32) for name in self.names}
        for shard in np.unique(rows // self.shard_size):
            where = np.nonzero(rows // self.shard_size == shard)[0]
            local = rows[where] - shard * self.shard_size
            with safe_open(str(self.folder / shard_name(int(shard))), framework="pt") as f:
                for name in self.names:
                    block = f.get_slice(name)  # memory-mapped: each row is read alone, the shard never whole
                    for target, row in zip(where.tolist(), local.tolist()):
                        out[name][target] = block[row:row + 1][0].float()
        return out

    def raw_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.meta["raw_mean"]), torch.tensor(self.meta["raw_std"])


class LatentArrays:
    """The same rows held in memory (small sets, tests): ``read`` and ``raw_stats`` as ``LatentShards``."""

    def __init__(self, tensors: dict[str, torch.Tensor], raw_mean: Sequence[float], raw_std: Sequence[float]) -> None:
        self.tensors, self.names = tensors, tuple(tensors)
        self.meta = {"shape": list(tensors["mean"].shape[1:]), "count": len(tensors["mean"])}
        self._raw = (torch.tensor(list(raw_mean)), torch.tensor(list(raw_std)))

    def __len__(self) -> int:
        return self.meta["count"]

    def read(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return {name: value[rows_t].float() for name, value in self.tensors.items()}

    def raw_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._raw


def write_meta(folder: Path, count: int, shard_size: int, shape: Sequence[int], names: Sequence[str],
               raw_mean: Sequence[float], raw_std: Sequence[float], extra: dict | None = None) -> None:
    fileio.write_text(folder / META, json.dumps({"count": count, "shard_size": shard_size, "shape": list(shape),
                                                 "tensors": list(names), "raw_mean": list(raw_mean),
                                                 "raw_std": list(raw_std), **(extra or {})}, indent=1))
