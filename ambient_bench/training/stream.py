"""Sigma-first sampling: draw the noise level, then the next sample that may be used at it.

The batch's sigma marginal stays exactly log-normal(P_mean, P_std); each sample's own sigma
distribution is the log-normal truncated to its admissible set (sigma > b·sigma_min or
sigma < sigma_max). Samples are visited in a fresh permutation every epoch; a sample that is
not admissible at the current sigma is passed over for that epoch, as in the official code.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ambient_bench.seeding import numpy_rng


class AdmissibleStream:
    def __init__(self, sigma_min: np.ndarray, sigma_max: np.ndarray, buffer: float, seed: int) -> None:
        if len(sigma_min) == 0:
            raise ValueError("the training set is empty: the method kept no sample")
        self.lower = buffer * np.asarray(sigma_min, dtype=np.float64)
        self.upper = np.asarray(sigma_max, dtype=np.float64)
        self.seed, self.epoch, self.pos = seed, 0, 0
        self.perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return numpy_rng("epoch-order", self.seed, epoch).permutation(len(self.lower))

    def _advance(self) -> int:
        i = int(self.perm[self.pos])
        self.pos += 1
        if self.pos == len(self.perm):
            self.epoch, self.pos = self.epoch + 1, 0
            self.perm = self._permutation(self.epoch)
        return i

    def take(self, sigma: float) -> int | None:
        """Index of the next sample admissible at ``sigma``; None if no sample is."""
        for _ in range(len(self.perm)):
            i = self._advance()
            if sigma > self.lower[i] or sigma < self.upper[i]:
                return i
        return None

    def batch(self, draw_sigma: Callable[[], float], size: int, max_redraws: int = 10_000
              ) -> tuple[np.ndarray, np.ndarray]:
        """``size`` (index, sigma) pairs; a sigma at which nothing is admissible is redrawn."""
        indices, sigmas = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.float64)
        for j in range(size):
            for _ in range(max_redraws):
                sigma = draw_sigma()
                i = self.take(sigma)
                if i is not None:
                    indices[j], sigmas[j] = i, sigma
                    break
            else:
                raise RuntimeError(f"no training sample is admissible at {max_redraws} consecutive "
                                   f"noise levels; check the annotations")
        return indices, sigmas

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self.perm = self._permutation(self.epoch)
