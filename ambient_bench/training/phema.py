"""Power-function EMA and its post-hoc reconstruction (EDM2 §3), written from the paper's description.

A power-function EMA with exponent γ averages the weights of steps τ ≤ t with density ∝ τ^γ, so its
width relative to the run's age is constant: σ_rel² = (γ+1) / ((γ+2)²(γ+3)). The update after step t
is θ̂ ← β_t·θ̂ + (1-β_t)·θ with β_t = (1 - 1/t)^(γ+1) (exact for the discrete profile τ^γ up to O(1/t)).

Training keeps two such averages (two σ_rel) and saves them at regular snapshots. Because every
profile is a known function of τ, any other σ_rel at any time can be reconstructed after training as
the least-squares combination of the stored profiles: Gram matrix of the stored profiles, right-hand
side their inner products with the target profile, both in closed form for power functions.
"""
from __future__ import annotations

import copy
from typing import Iterable, Sequence

import numpy as np
import torch


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """γ of a power-function profile of relative width σ_rel (the largest real root of a cubic)."""
    inv = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - inv, 12.0 - inv])
    return float(roots[np.isreal(roots)].real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    return float(np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))))


def power_beta(gamma: float, step: int) -> float:
    """β after optimiser step ``step`` (1-based): at step 1 the average is the weights themselves."""
    return (1.0 - 1.0 / step) ** (gamma + 1)


class PowerEMA:
    """Power-function EMAs of a module's parameters (and buffers copied), one per σ_rel."""

    def __init__(self, net: torch.nn.Module, sigma_rels: Sequence[float]) -> None:
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = tuple(sigma_rel_to_gamma(s) for s in self.sigma_rels)
        self.averages = [copy.deepcopy(net).eval().requires_grad_(False) for _ in self.sigma_rels]

    @torch.no_grad()
    def update(self, net: torch.nn.Module, step: int) -> None:
        for gamma, average in zip(self.gammas, self.averages):
            beta = power_beta(gamma, step)
            for target, source in zip(average.parameters(), net.parameters()):
                target.lerp_(source.detach().to(target.dtype), 1 - beta)
            for target, source in zip(average.buffers(), net.buffers()):
                target.copy_(source)

    def state_dict(self) -> dict:
        return {"sigma_rels": self.sigma_rels, "averages": [a.state_dict() for a in self.averages]}

    def load_state_dict(self, state: dict) -> None:
        for average, saved in zip(self.averages, state["averages"]):
            average.load_state_dict(saved)


def _profile_inner(t_a: float, gamma_a: float, t_b: float, gamma_b: float) -> float:
    """∫ p_a p_b dτ for normalised power profiles p(τ) = (γ+1)·τ^γ / t^(γ+1) on [0, t]."""
    end = min(t_a, t_b)
    return ((gamma_a + 1) * (gamma_b + 1) * end ** (gamma_a + gamma_b + 1)
            / ((gamma_a + gamma_b + 1) * t_a ** (gamma_a + 1) * t_b ** (gamma_b + 1)))


def reconstruction_coefficients(stored: Iterable[tuple[float, float]], target: tuple[float, float],
                                rcond: float = 1e-10) -> np.ndarray:
    """Least-squares weights c with Σ c_i p_i ≈ p_target; ``stored``: (step, σ_rel) of each saved average,
    ``target``: (step, σ_rel) wanted."""
    stored = [(float(t), sigma_rel_to_gamma(s)) for t, s in stored]
    t_target, g_target = float(target[0]), sigma_rel_to_gamma(target[1])
    gram = np.array([[_profile_inner(ta, ga, tb, gb) for tb, gb in stored] for ta, ga in stored])
    rhs = np.array([_profile_inner(ta, ga, t_target, g_target) for ta, ga in stored])
    coefficients, *_ = np.linalg.lstsq(gram, rhs, rcond=rcond)
    return coefficients


def reconstruct(snapshots: Sequence[tuple[int, float, dict[str, torch.Tensor]]], sigma_rel: float,
                step: int | None = None) -> dict[str, torch.Tensor]:
    """The state dict of the EMA with ``sigma_rel`` at ``step`` (default: the last snapshot's), from
    saved (step, σ_rel, state dict) averages. Floating tensors are combined; others come from the last."""
    step = step if step is not None else max(s for s, _, _ in snapshots)
    coefficients = reconstruction_coefficients([(s, r) for s, r, _ in snapshots], (step, sigma_rel))
    last = max(snapshots, key=lambda item: item[0])[2]
    out: dict[str, torch.Tensor] = {}
    for name, value in last.items():
        if value.is_floating_point():
            total = torch.zeros_like(value, dtype=torch.float64)
            for c, (_, _, state) in zip(coefficients, snapshots):
                total += float(c) * state[name].double()
            out[name] = total.to(value.dtype)
        else:
            out[name] = value.clone()
    return out
