"""The EDM2 network and its power-function EMA (issue 18)."""
from __future__ import annotations

import pytest
import torch

from ambient_bench.diffusion.edm2 import EDM2_PAPER_MPARAMS, build_edm2
from ambient_bench.diffusion.mp_layers import mp_cat, mp_silu, mp_sum
from ambient_bench.training.phema import PowerEMA, gamma_to_sigma_rel, reconstruct, sigma_rel_to_gamma


@pytest.mark.parametrize("preset", list(EDM2_PAPER_MPARAMS))
def test_presets_have_the_papers_parameter_counts(preset):
    with torch.device("meta"):  # XXL is 1.5 B parameters: built without memory
        net = build_edm2({"preset": preset}, img_channels=4, resolution=64, label_dim=1000)
    count = sum(p.numel() for p in net.parameters()) / 1e6
    assert count == pytest.approx(EDM2_PAPER_MPARAMS[preset], rel=0.01)


def test_magnitude_preserving_ops_keep_unit_variance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    assert mp_silu(a).pow(2).mean().sqrt() == pytest.approx(1.0, abs=0.02)  # rms of silu(N(0,1)) / 0.596
    assert mp_sum(a, b, 0.3).std() == pytest.approx(1.0, abs=0.01)
    wide, narrow = a.reshape(2000, 100), b.reshape(2000, 100)[:, :30]
    assert mp_cat(wide, narrow, dim=1, t=0.3).pow(2).mean().sqrt() == pytest.approx(1.0, abs=0.01)


def test_tiny_network_starts_as_the_skip_path_and_keeps_weights_normalised():
    torch.manual_seed(0)
    net = build_edm2({"preset": "tiny"}, img_channels=4, resolution=8, label_dim=3)
    x, sigma = torch.randn(2, 4, 8, 8), torch.tensor([0.5, 2.0])
    labels = torch.nn.functional.one_hot(torch.tensor([0, 2]), 3).float()
    out, logvar = net(x, sigma, class_labels=labels, return_logvar=True)
    skip = 0.25 / (sigma ** 2 + 0.25)
    assert torch.allclose(out, skip.reshape(-1, 1, 1, 1) * x)  # the output gain starts at 0
    assert logvar.shape == (2, 1, 1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        net.train()
        net.net.out_gain.data.fill_(1.0)
        loss = net(x, sigma, class_labels=labels).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net(x, sigma, class_labels=labels)  # the forward pass in training mode writes the weights back normalised
    weight = net.net.enc["8x8_conv"].weight
    norms = weight.flatten(1).norm(dim=1) / weight[0].numel() ** 0.5
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-3)


@pytest.mark.parametrize("sigma_rel", [0.01, 0.05, 0.1, 0.2])
def test_sigma_rel_and_gamma_are_inverse(sigma_rel):
    assert gamma_to_sigma_rel(sigma_rel_to_gamma(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-9)


def test_post_hoc_reconstruction_matches_a_directly_tracked_ema():
    """Two stored profiles (σ_rel 0.05, 0.10, a snapshot every 100 steps) rebuild σ_rel 0.07 at the end."""
    g = torch.Generator().manual_seed(1)
    net = torch.nn.Linear(16, 16)
    stored, direct = PowerEMA(net, [0.05, 0.10]), PowerEMA(net, [0.07])
    snapshots, drift = [], torch.randn(16 * 17, generator=g)
    for step in range(1, 3001):
        with torch.no_grad():  # a noisy walk with a slow drift, like weights under SGD
            for p, noise in zip(net.parameters(), torch.split(torch.randn(16 * 17, generator=g) * 0.05 + drift
                                                                 * 0.002, [256, 16])):
                p += noise.reshape(p.shape)
        stored.update(net, step)
        direct.update(net, step)
        if step % 100 == 0:
            snapshots += [(step, s, {k: v.clone() for k, v in a.state_dict().items()})
                          for s, a in zip(stored.sigma_rels, stored.averages)]
    rebuilt = reconstruct(snapshots, sigma_rel=0.07)
    truth = direct.averages[0].state_dict()
    neighbour = stored.averages[0].state_dict()  # the nearest stored profile, as a scale
    error = sum((rebuilt[k] - truth[k]).norm() ** 2 for k in truth) ** 0.5
    scale = sum((neighbour[k] - truth[k]).norm() ** 2 for k in truth) ** 0.5
    assert error < 0.01 * scale  # measured: 3e-4


def test_guidance_one_is_the_unguided_sampler_exactly_and_otherwise_extrapolates():
    from ambient_bench.diffusion.guidance import guided
    from ambient_bench.diffusion.sampler import heun_sample

    torch.manual_seed(0)
    main = build_edm2({"preset": "tiny"}, img_channels=4, resolution=8).eval()
    guide = build_edm2({"preset": "tiny", "model_channels": 8}, img_channels=4, resolution=8).eval()
    for net in (main, guide):
        net.net.out_gain.data.fill_(1.0)  # not the initial skip-only network
    plain = lambda x, s: main(x, s)  # noqa: E731
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    unguided = heun_sample(plain, latents, num_steps=4)
    assert torch.equal(heun_sample(guided(plain, lambda x, s: guide(x, s), 1.0), latents, num_steps=4), unguided)
    x, s = torch.randn(2, 4, 8, 8), torch.tensor([1.0, 1.0])
    d, d_g = main(x, s), guide(x, s)
    assert torch.allclose(guided(plain, lambda x, s: guide(x, s), 1.7)(x, s), d_g + 1.7 * (d - d_g), atol=1e-5)
    with pytest.raises(Exception, match="guide"):
        guided(plain, None, 1.2)
