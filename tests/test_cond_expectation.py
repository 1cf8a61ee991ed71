"""The conditional-expectation target (seed notes §4.4): uniform data on the unit circle, where the score
blows up as t → 0 and E[X0 | X_t] stays bounded; our objective is the SNR-weighted x0 loss in EDM units."""
from __future__ import annotations

import math

import numpy as np
import scipy.special
import torch

from ambient_bench import OBJECTIVES, TrainBatch
from ambient_bench.objectives.cond_expectation import edm_sigma, ou_time


def f_closed_form(x: np.ndarray, t: float) -> np.ndarray:
    """E[X0 | X_t = x] for X0 uniform on the unit circle, X_t = e^{-t/2}X0 + sqrt(1 - e^{-t})Z."""
    r = np.linalg.norm(x, axis=1, keepdims=True)
    kappa = math.exp(-t / 2) * r / -math.expm1(-t)
    return scipy.special.ive(1, kappa) / scipy.special.ive(0, kappa) * x / r


def test_the_closed_form_matches_monte_carlo_and_stays_bounded_while_the_score_blows_up():
    rng = np.random.default_rng(0)
    t = 0.5
    angles = rng.uniform(0, 2 * np.pi, 400_000)
    x0 = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    for probe in ([0.3, 0.1], [-0.8, 0.5], [0.0, -1.2]):  # E[X0 | X_t = probe] by Monte Carlo over the circle
        weights = np.exp(-((np.array(probe) - math.exp(-t / 2) * x0) ** 2).sum(1) / (2 * -math.expm1(-t)))
        monte_carlo = (weights[:, None] * x0).sum(0) / weights.sum()
        np.testing.assert_allclose(monte_carlo, f_closed_form(np.array([probe]), t)[0], atol=2e-3)
    points = rng.standard_normal((20_000, 2)) * 0.05 + x0[:20_000]  # near the circle
    largest = {}
    for t in (1.0, 0.01, 0.001):
        f = f_closed_form(points, t)
        score = (points - math.exp(-t / 2) * f) / -math.expm1(-t)  # minus the OU score, S(X, t)
        assert np.linalg.norm(f, axis=1).max() <= 1.0
        largest[t] = np.linalg.norm(score, axis=1).max()
    assert largest[0.001] > 20 * largest[1.0]  # the notes: 6.4 → 143 from t = 1 to 0.001


def test_in_edm_units_the_loss_is_the_epsilon_loss_and_the_closed_form_minimises_it():
    assert abs(ou_time(edm_sigma(0.7)) - 0.7) < 1e-12 and abs(edm_sigma(ou_time(2.0)) - 2.0) < 1e-12
    g = torch.Generator().manual_seed(0)
    n = 50_000
    angles = torch.rand(n, generator=g) * 2 * math.pi
    x0 = torch.stack([angles.cos(), angles.sin()], dim=1).reshape(n, 2, 1, 1)
    sigma = torch.exp(torch.randn(n, generator=g) * 0.5 - 0.5).double()
    batch = TrainBatch(x0, torch.zeros_like(x0), sigma, torch.zeros(n, dtype=torch.float64),
                       torch.randn(x0.shape, generator=g))
    objective = OBJECTIVES.build({"name": "cond_expectation"})

    def exact(x, s, rows=None, scale=1.0):  # D(x; sigma) = f(x / sqrt(1 + sigma²), ln(1 + sigma²))
        s = s.double().reshape(-1, 1)
        flat = x.reshape(len(x), 2).double() / torch.sqrt(1 + s ** 2)
        out = _vector_f(flat.numpy(), ou_time(s).numpy())
        return (scale * torch.from_numpy(out)).reshape(x.shape).to(x.dtype)

    loss = objective.loss(exact, batch)
    s = sigma.float().reshape(-1, 1, 1, 1)
    x_t = x0 + s * batch.eps
    epsilon_hat = (x_t - exact(x_t, sigma)) / s
    torch.testing.assert_close(loss, ((epsilon_hat - batch.eps) ** 2).flatten(1).sum(1), rtol=1e-4, atol=1e-4)
    for scale in (0.9, 1.1):  # the conditional expectation is the minimiser
        scaled = objective.loss(lambda x, s, rows=None: exact(x, s, scale=scale), batch)
        assert float(scaled.mean()) > float(loss.mean())


def _vector_f(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    r = np.linalg.norm(x, axis=1, keepdims=True)
    kappa = np.exp(-t / 2) * r / -np.expm1(-t)
    return scipy.special.ive(1, kappa) / scipy.special.ive(0, kappa) * x / r
