"""EDM preconditioning, the ambient loss, sigma-first sampling and the Heun sampler."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from ambient_bench.diffusion.edm import EDMPrecond
from ambient_bench.diffusion.loss import ambient_edm_loss, annotation_noise
from ambient_bench.diffusion.sampler import edm_sigma_steps, heun_sample
from ambient_bench.diffusion.unet import UNet
from ambient_bench.objectives.ambient import buffer_factor
from ambient_bench.training.stream import AdmissibleStream


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_unet_shapes_and_zero_init_output():
    net = UNet(3, 16, model_channels=8, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(8,))
    x = torch.randn(2, 3, 16, 16)
    assert net(x, torch.zeros(2)).shape == x.shape
    precond = EDMPrecond(net)
    sigma = torch.tensor([0.5, 2.0])
    expected = 0.25 / (sigma ** 2 + 0.25)
    torch.testing.assert_close(precond(x, sigma), expected.view(-1, 1, 1, 1) * x)  # F = 0 at init


def test_ambient_loss_is_edm_loss_when_sigma_n_is_zero():
    x0, z, eps = (torch.randn(4, 1, 8, 8, generator=gen(i)) for i in range(3))
    sigma = torch.tensor([0.1, 0.5, 1.0, 5.0])
    denoiser = lambda x, s: 0.3 * x  # noqa: E731
    ours = ambient_edm_loss(denoiser, x0, z, sigma, torch.zeros(4), eps)
    weight = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    edm = weight * ((denoiser(x0 + sigma.view(-1, 1, 1, 1) * eps, sigma) - x0) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(ours, edm)


def test_ambient_loss_equals_the_papers_weighted_tweedie_form():
    x0, z, eps = (torch.randn(3, 1, 8, 8, generator=gen(i), dtype=torch.float64) for i in range(3))
    sigma = torch.tensor([1.5, 2.0, 4.0], dtype=torch.float64)
    sigma_n = torch.tensor([1.0, 1.2, 0.0], dtype=torch.float64)
    denoiser = lambda x, s: torch.tanh(x)  # noqa: E731
    ours = ambient_edm_loss(denoiser, x0, z, sigma, sigma_n, eps)
    s, sn = sigma.view(-1, 1, 1, 1), sigma_n.view(-1, 1, 1, 1)
    x_tn = x0 + sn * z
    x_t = x_tn + (s ** 2 - sn ** 2).sqrt() * eps
    x_hat_tn = (1 - sn ** 2 / s ** 2) * denoiser(x_t, sigma) + sn ** 2 / s ** 2 * x_t  # Tweedie step σ → σ_n
    weight = (s ** 2 + 0.25) / (s * 0.5) ** 2 * s ** 4 / (s ** 2 - sn ** 2) ** 2      # λ_EDM · λ_amb
    paper = (weight * (x_hat_tn - x_tn) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(ours, paper)


@pytest.mark.parametrize("clip", [1.0, 2.0, 4.0])
def test_clipped_ambient_weight_matches_table6_definition(clip):
    """min(lambda_amb, c) in the paper's form; c = 1 is 'no weight'. Sample 1 has lambda_amb ≈ 1.78
    (clipped only at c = 1), sample 2 lambda_amb ≈ 9.2 (clipped at every c), sample 3 sigma_n = 0."""
    x0, z, eps = (torch.randn(3, 1, 8, 8, generator=gen(i), dtype=torch.float64) for i in range(3))
    sigma = torch.tensor([4.0, 1.1, 2.0], dtype=torch.float64)
    sigma_n = torch.tensor([2.0, 0.9, 0.0], dtype=torch.float64)
    denoiser = lambda x, s: torch.tanh(x)  # noqa: E731
    ours = ambient_edm_loss(denoiser, x0, z, sigma, sigma_n, eps, weight_clip=clip)
    s, sn = sigma.view(-1, 1, 1, 1), sigma_n.view(-1, 1, 1, 1)
    x_tn = x0 + sn * z
    x_t = x_tn + (s ** 2 - sn ** 2).sqrt() * eps
    x_hat_tn = (1 - sn ** 2 / s ** 2) * denoiser(x_t, sigma) + sn ** 2 / s ** 2 * x_t
    lambda_amb = s ** 4 / (s ** 2 - sn ** 2) ** 2
    paper = ((s ** 2 + 0.25) / (s * 0.5) ** 2 * lambda_amb.clamp(max=clip) * (x_hat_tn - x_tn) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(ours, paper)
    full = ambient_edm_loss(denoiser, x0, z, sigma, sigma_n, eps)
    assert ours[1] < full[1] and ours[2] == full[2]  # clipped where lambda_amb > c; untouched at sigma_n = 0


def test_table6_method_options_reach_the_objective():
    from ambient_bench import METHODS, OBJECTIVES, UserError

    build = lambda **p: OBJECTIVES.build(METHODS.build({"name": "ambient_o", "sigma_min": 1.0, **p})  # noqa: E731
                                         .objective_spec())
    assert build().weight_clip() == math.inf
    assert build(ambient_weight="none").weight_clip() == 1.0
    assert build(weight_clip=2).weight_clip() == 2.0
    assert build(s_max=2).buffer() == pytest.approx(math.sqrt(2)) and build(s_max=float("inf")).buffer() == 1.0
    with pytest.raises(UserError, match="weight_clip"):
        build(ambient_weight="none", weight_clip=2)


def test_annotation_noise_rule():
    sigma_min = torch.tensor([0.0, 1.0, 1.0, 3.0])
    assert annotation_noise(torch.tensor([0.5, 0.5, 2.0, 2.0]), sigma_min).tolist() == [0.0, 0.0, 1.0, 0.0]


def test_buffer_factor():
    assert buffer_factor(4.0) == pytest.approx(2 / math.sqrt(3))
    assert buffer_factor(2.0) == pytest.approx(math.sqrt(2))
    assert buffer_factor(float("inf")) == 1.0
    sigma_min, b = 1.0, buffer_factor(4.0)
    sigma = b * sigma_min * 1.0001
    assert sigma ** 2 / (sigma ** 2 - sigma_min ** 2) < 4.0  # λ_amb^(1/2) < s_max just above the buffer


def test_sigma_first_stream_keeps_lognormal_marginal_and_admissibility():
    n = 200
    corrupted = np.arange(n) % 10 != 0  # 90% corrupted
    sigma_min = np.where(corrupted, 1.0, 0.0)
    b = buffer_factor(4.0)
    stream = AdmissibleStream(sigma_min, np.zeros(n), b, seed=0)
    rng = np.random.default_rng(1)
    indices, sigmas = stream.batch(lambda: math.exp(-1.2 + 1.2 * rng.standard_normal()), 5000)
    assert scipy.stats.kstest(np.log(sigmas), "norm", args=(-1.2, 1.2)).pvalue > 0.01
    used_corrupted = corrupted[indices]
    assert (sigmas[used_corrupted] > b * 1.0).all()
    assert used_corrupted.any() and (~used_corrupted).any()


def test_stream_state_round_trip_and_out_of_distribution_rule():
    stream = AdmissibleStream(np.array([np.inf, 0.0, np.inf]), np.array([0.5, 0.0, 0.5]), 1.0, seed=3)
    assert stream.take(10.0) == 1  # only the clean sample is admissible at high noise
    low = [stream.take(0.1) for _ in range(6)]
    assert set(low) == {0, 1, 2}
    state = stream.state_dict()
    ahead = [stream.take(0.1) for _ in range(5)]
    stream.load_state_dict(state)
    assert [stream.take(0.1) for _ in range(5)] == ahead
    empty = AdmissibleStream(np.array([5.0]), np.array([0.0]), 1.0, seed=0)
    assert empty.take(1.0) is None


def test_edm_schedule():
    steps = edm_sigma_steps(18)
    assert len(steps) == 19 and steps[0] == pytest.approx(80.0) and steps[-2] == pytest.approx(0.002)
    assert steps[-1] == 0 and (steps[:-1] > steps[1:]).all()


def test_heun_sampler_recovers_a_gaussian_with_the_ideal_denoiser():
    data_std = 0.5
    ideal = lambda x, s: x * data_std ** 2 / (data_std ** 2 + s.view(-1, 1, 1, 1) ** 2)  # noqa: E731
    latents = torch.randn(4000, 1, 2, 2, generator=gen(0), dtype=torch.float64)
    target = data_std * latents.std().item()  # the exact ODE maps N(0, 80²) onto N(0, data_std²)
    errors = [abs(heun_sample(ideal, latents, num_steps=n).std().item() / target - 1) for n in (10, 18, 40, 200)]
    assert errors == sorted(errors, reverse=True)  # second-order convergence towards the exact map
    assert errors[1] < 0.08 and errors[-1] < 1e-3
