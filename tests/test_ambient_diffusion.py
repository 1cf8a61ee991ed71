"""Ambient Diffusion (masks with further corruption) against the seed notes' checks (§1.4, §1.7)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from ambient_bench import CORRUPTIONS, DATASETS, METHODS, OBJECTIVES, AnnotationContext, TrainBatch
from ambient_bench.data.mixing import mix
from ambient_bench.diffusion.sampler import fixed_mask_denoiser, heun_sample

DIM, RHO = 8, 0.9
COV = torch.tensor([[RHO ** abs(i - j) for j in range(DIM)] for i in range(DIM)], dtype=torch.float64)


def posterior_mean(x: torch.Tensor, seen: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | the seen coordinates of x = x0 + sigma·eps] for x0 ~ N(0, COV), per row (N×DIM each)."""
    m = seen.double()
    eye = torch.eye(DIM, dtype=torch.float64)
    # unseen coordinates: identity rows/columns, so one batched solve covers every mask
    system = m[:, :, None] * (COV + sigma ** 2 * eye) * m[:, None, :] + torch.diag_embed(1 - m)
    solved = torch.linalg.solve(system, (m * x.double())[:, :, None])[:, :, 0]
    return (COV @ (m * solved).T).T


def test_the_pool_masks_are_the_corruption_s_and_the_further_masks_hide_delta():
    data = DATASETS.build({"name": "digits", "resolution": 8}).load()
    spec = {"name": "pixel_mask", "fraction": 0.4}
    mixed = mix(data, 0.0, [CORRUPTIONS.build(spec)], seed=5)
    ann = METHODS.build({"name": "ambient_diffusion", "delta": 0.2}).annotate(
        mixed, AnnotationContext(workdir=None, classifiers={}, corruptions=[spec], mix_seed=5))
    observed, seen = ann.view["mask"], ann.view["mask_tilde"]
    assert observed.shape == (len(mixed.index), 1, 8, 8) and bool((seen <= observed).all())
    assert bool((mixed.images[~observed.expand_as(mixed.images)] == 0).all())  # A's complement is the fill
    assert float(observed.float().mean()) == pytest.approx(0.6, abs=0.01)
    assert float(seen.float().mean()) == pytest.approx(0.6 * 0.8, abs=0.01)
    sampler = METHODS.build({"name": "ambient_diffusion", "delta": 0.2}).sampler(ann)
    assert sampler == {"name": "fixed_mask", "survival": pytest.approx(float(seen.float().mean()))}
    blurred = mix(data, 0.0, [CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.0})], seed=5)
    with pytest.raises(Exception, match="removes no pixels"):
        METHODS.build({"name": "ambient_diffusion"}).annotate(
            blurred, AnnotationContext(workdir=None, classifiers={}, corruptions=[{"name": "gaussian_blur",
                                                                                    "sigma": 1.0}]))


def test_the_network_sees_the_further_masked_input_and_is_graded_on_the_observed_pixels():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 1, 1, 4, generator=g), torch.randn(2, 1, 1, 4, generator=g)
    observed = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1]], dtype=torch.float32).reshape(2, 1, 1, 4)
    seen = observed * torch.tensor([1, 0, 1, 1.0]).reshape(1, 1, 1, 4)
    inputs = []

    def denoiser(x, sigma):
        inputs.append(x)
        return torch.cat([torch.full_like(x[:, :1], 7.0), x[:, 1:]], dim=1)  # predicts 7 everywhere

    batch = TrainBatch(x0, torch.zeros_like(x0), torch.ones(2, dtype=torch.float64), torch.zeros(2), eps,
                       view={"mask": observed, "mask_tilde": seen})
    loss = OBJECTIVES.build({"name": "ambient_diffusion"}).loss(denoiser, batch)
    torch.testing.assert_close(inputs[0], torch.cat([seen * (x0 + eps), seen], dim=1))
    weight = (1 + 0.25) / 0.25
    torch.testing.assert_close(loss, weight * (observed * (7.0 - x0) ** 2).flatten(1).sum(1))


class MaskedMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2 * DIM, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                                       torch.nn.SiLU(), torch.nn.Linear(128, DIM))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = self.net(x.flatten(1)).reshape(-1, 1, 1, DIM)
        return torch.cat([out, torch.zeros_like(out)], dim=1)  # 2C channels, as a mask-conditioned network


def hidden_error(delta: float, sigma: float = 0.3, p: float = 0.4, steps: int = 1500) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    chol = torch.linalg.cholesky(COV).float()
    net, objective = MaskedMLP(), OBJECTIVES.build({"name": "ambient_diffusion"})
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        x0 = (chol @ torch.randn(DIM, 512, generator=g)).T.reshape(-1, 1, 1, DIM)
        observed = (torch.rand(512, 1, 1, DIM, generator=g) >= p).float()
        seen = observed * (torch.rand(512, 1, 1, DIM, generator=g) >= delta).float()
        batch = TrainBatch(observed * x0, torch.zeros_like(x0), torch.full((512,), sigma, dtype=torch.float64),
                           torch.zeros(512), torch.randn(512, 1, 1, DIM, generator=g),
                           view={"mask": observed, "mask_tilde": seen})
        loss = objective.loss(net, batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x0 = (chol.double() @ torch.randn(DIM, 4000, generator=g, dtype=torch.float64)).T
    seen = torch.rand(4000, DIM, generator=g) >= 1 - (1 - p) * (1 - delta)
    x_t = x0 + sigma * torch.randn(4000, DIM, generator=g, dtype=torch.float64)
    with torch.no_grad():
        guess = net(torch.cat([(seen * x_t).float(), seen.float()], 1).reshape(-1, 2, 1, DIM),
                    torch.full((4000,), sigma))[:, 0, 0].double()
    truth = posterior_mean(x_t, seen, sigma)
    return float(((guess - truth)[~seen] ** 2).mean())


@pytest.mark.slow
def test_redrawn_further_masks_change_with_the_step_seed_and_stay_inside_the_observed_pixels():
    observed = (torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.3).float()
    x0, eps = torch.randn(64, 1, 4, 4), torch.randn(64, 1, 4, 4)
    inputs = []

    def denoiser(x, sigma):
        inputs.append(x[:, 1:])  # the mask channels: Ã of this call
        return x

    def call(seed, view):
        torch.manual_seed(seed)
        batch = TrainBatch(x0, torch.zeros_like(x0), torch.ones(64, dtype=torch.float64), torch.zeros(64), eps,
                           view={"mask": observed, "mask_tilde": observed, **view})
        return OBJECTIVES.build({"name": "ambient_diffusion"}).loss(denoiser, batch)

    redraw = {"delta": torch.full((64,), 0.25)}
    call(0, redraw), call(0, redraw), call(1, redraw), call(0, {})
    first, again, other, fixed = inputs
    assert torch.equal(first, again) and not torch.equal(first, other)  # per step seed, reproducible
    assert bool((first <= observed).all()) and torch.equal(fixed, observed)  # Ã ⊆ A; fixed: as annotated
    assert float(first.sum() / observed.sum()) == pytest.approx(0.75, abs=0.05)  # B ~ Bernoulli(1 − δ)
    ann = METHODS.build({"name": "ambient_diffusion", "delta": 0.25, "redraw": True}).annotate(
        mix(DATASETS.build({"name": "digits", "resolution": 8}).load(), 0.0,
            [CORRUPTIONS.build({"name": "pixel_mask", "fraction": 0.4})], seed=5),
        AnnotationContext(workdir=None, classifiers={}, corruptions=[{"name": "pixel_mask", "fraction": 0.4}],
                          mix_seed=5))
    assert ann.view["delta"].unique().tolist() == [0.25]


def test_hidden_pixels_are_learned_when_delta_is_positive_and_not_when_it_is_zero():
    learned, unsupervised = hidden_error(0.1), hidden_error(0.0)
    print(f"hidden-coordinate error vs the closed form: delta 0.1 {learned:.4f}, delta 0 {unsupervised:.4f}")
    assert learned < 0.05 and unsupervised > 5 * learned


@pytest.mark.parametrize("survival, variance, lag1", [(1.0, 1.03, 0.903), (0.72, 0.95, 0.930), (0.36, 0.81, 0.967)])
def test_the_fixed_mask_sampler_with_the_exact_denoiser_shrinks_as_the_seed_notes_measured(survival, variance, lag1):
    """Seed notes §1.4: even E[x0 | M x_t, M] itself, sampled with one fixed mask, loses variance."""
    n, g = 3000, torch.Generator().manual_seed(2)
    masks = (torch.rand(n, 1, 1, DIM, generator=g) < survival)

    def exact(inputs, sigma):  # a "network" that is the exact posterior mean of what it sees
        x, m = inputs[:, :1, 0], inputs[:, 1:, 0]
        mean = posterior_mean(x.reshape(n, DIM), m.reshape(n, DIM) > 0.5, float(sigma[0]))
        return torch.cat([mean.reshape(n, 1, 1, DIM), inputs[:, 1:]], dim=1)

    denoiser = fixed_mask_denoiser(exact, masks.double(), channels=1, clip=False)
    samples = heun_sample(denoiser, torch.randn(n, 1, 1, DIM, generator=g, dtype=torch.float64), num_steps=100)
    x = samples.reshape(n, DIM).numpy()
    measured_variance = float(x.var(axis=0).mean())
    measured_lag1 = float(np.mean([np.corrcoef(x[:, i], x[:, i + 1])[0, 1] for i in range(DIM - 1)]))
    print(f"survival {survival}: variance {measured_variance:.3f} (notes {variance}), "
          f"lag-1 {measured_lag1:.3f} (notes {lag1})")
    assert measured_variance == pytest.approx(variance, abs=0.06)
    assert measured_lag1 == pytest.approx(lag1, abs=0.015)


def test_a_masked_suite_trains_a_mask_conditioned_network_and_samples_with_fixed_masks(tmp_path):
    import json

    from ambient_bench import fileio
    from conftest import TINY_CELL, run_cli

    suite = tmp_path / "masked.yaml"
    suite.write_text(TINY_CELL.format(name="masked", results=tmp_path / "results")
                     .replace("clean_fraction: 0.5", "clean_fraction: 0.0")
                     .replace("{name: gaussian_blur, sigma: 0.6}", "{name: pixel_mask, fraction: 0.4}")
                     .replace("method: clean_only", "method: ambient_diffusion"))
    result = run_cli("run", str(suite), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [network] = (tmp_path / "runs" / "train").glob("*/network.pt")
    record = fileio.torch_load(network)
    assert record["img_channels"] == 2 and record["image_channels"] == 1  # [Ã ⊙ x_t, Ã] for grey digits
    assert record["sampler"]["name"] == "fixed_mask" and record["sampler"]["survival"] == pytest.approx(0.54, abs=0.02)
    [samples] = (tmp_path / "runs" / "sample").glob("*/samples.pt")
    assert fileio.torch_load(samples)["images"].shape == (32, 1, 8, 8)
    [summary] = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "annotate").glob("*/summary.json")]
    assert summary["observed_fraction"] == pytest.approx(0.6, abs=0.02)


def test_a_mix_without_masks_is_refused_before_anything_runs():
    from ambient_bench import UserError

    method = METHODS.build({"name": "ambient_diffusion"})
    method.check_mix([{"name": "pixel_mask", "fraction": 0.4}, {"name": "box_mask"}])
    with pytest.raises(UserError, match="'gaussian_blur' removes no pixels"):
        method.check_mix([{"name": "pixel_mask", "fraction": 0.4}, {"name": "gaussian_blur", "sigma": 1.0}])
