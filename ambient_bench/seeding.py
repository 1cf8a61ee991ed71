"""Named, order-free seeds: every random draw is a pure function of what it is for.

``seed_for("noise", mix_seed, image_index)`` gives the same number in every process, on
every machine and after every resume, so results never depend on batch size, worker count,
interruptions or the order in which stages run.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def _as_int(part: int | str) -> int:
    if isinstance(part, (bool, np.bool_)):
        raise TypeError("seed parts must be ints or strings")
    if isinstance(part, (int, np.integer)):
        if part < 0:
            raise ValueError(f"seed parts must be non-negative, got {part}")
        return int(part)
    return int.from_bytes(hashlib.sha256(str(part).encode()).digest()[:8], "little")


def seed_sequence(*parts: int | str) -> np.random.SeedSequence:
    return np.random.SeedSequence([_as_int(p) for p in parts])


def seed_for(*parts: int | str) -> int:
    """A 63-bit seed derived from ``parts`` (strings name the purpose)."""
    words = seed_sequence(*parts).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))


def numpy_rng(*parts: int | str) -> np.random.Generator:
    return np.random.default_rng(seed_sequence(*parts))


def torch_generator(*parts: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed_for(*parts))
