"""Scores composed from views (seed notes §2.5): a Gaussian "video" with AR(1) correlation, closed forms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ambient_bench.diffusion.views import AveragePool, Crop, composite_score


def ar1(rho: float, size: int = 4) -> np.ndarray:
    return np.array([[rho ** abs(i - j) for j in range(size)] for i in range(size)])


def residual_share(rho: float, sigma: float) -> float:
    """E||r||² / E||s||² for the clips {0, 1} and {2, 3} of a 4-frame AR(1) video, in closed form."""
    noisy = ar1(rho) + sigma ** 2 * np.eye(4)
    full = np.linalg.inv(noisy)  # s(x) = -full·x
    views = np.zeros((4, 4))
    for clip in ([0, 1], [2, 3]):
        views[np.ix_(clip, clip)] = np.linalg.inv(noisy[np.ix_(clip, clip)])
    residual = full - views
    return float(np.trace(residual @ noisy @ residual.T) / np.trace(full @ noisy @ full.T))


@pytest.mark.parametrize("rho,sigma,noted", [(0.0, 0.5, 0.0), (0.3, 0.1, 0.042), (0.6, 0.5, 0.095),
                                             (0.9, 0.1, 0.270), (0.9, 2.0, 0.033)])
def test_the_residual_share_grows_with_correlation_and_fades_with_noise(rho, sigma, noted):
    assert residual_share(rho, sigma) == pytest.approx(noted, abs=0.005)  # the seed notes' table (§2.5)


def test_the_composite_of_exact_view_scores_is_the_score_when_views_are_independent():
    sigma = torch.tensor([0.5])
    cov = torch.tensor(np.kron(np.eye(2), ar1(0.6, 2)))  # clips {0, 1} and {2, 3} independent
    precision = torch.linalg.inv(cov + 0.25 * torch.eye(4))
    block = torch.linalg.inv(cov[:2, :2] + 0.25 * torch.eye(2))
    views = [(Crop((0, 1), 4), lambda v, s: v - s ** 2 * (v @ block.T)),  # D = v + σ²·s of a 2-D Gaussian
             (Crop((2, 3), 4), lambda v, s: v - s ** 2 * (v @ block.T))]
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(composite_score(x, sigma, views), -(x @ precision.T))


def test_average_pooling_views_are_queried_at_sigma_over_f():
    pool = AveragePool(2)
    x, v = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    assert torch.allclose((pool.apply(x) * v).sum(), (x * pool.adjoint(v)).sum())  # Vᵀ is the adjoint
    gram = torch.stack([pool.apply(pool.adjoint(e.reshape(1, 1, 2, 2))).flatten() for e in torch.eye(4)])
    torch.testing.assert_close(gram, torch.eye(4) / 4)  # V Vᵀ = I/f²
    noise = torch.randn(200_000, 1, 4, 4, dtype=torch.float64)
    assert float(pool.apply(noise).std()) == pytest.approx(pool.noise_scale, rel=0.01)  # σ_view = σ/f


LAMBDAS = (0.0, 0.03, 0.1, 0.3, 1.0)


def two_stage_gains(rho: float, sigma: float = 0.5, trials: int = 20, seed: int = 0) -> dict[float, float]:
    """Score MSE of DSM on 50 full videos over that of views + residual, per penalty λ (seed notes §2.5).

    Stage 1: each clip's Gaussian model from 5,000 clips. Stage 2: a linear residual fitted by DSM on the
    50 full videos (40 noise draws each) with the output-norm penalty λ·E||r||², which shrinks it by
    1/(1 + λ) toward the views-only score. MSE in closed form against the true score."""
    rng = np.random.default_rng(seed)
    cov = ar1(rho)
    noisy = cov + sigma ** 2 * np.eye(4)
    truth = -np.linalg.inv(noisy)
    mse = lambda a: np.trace((a - truth) @ noisy @ (a - truth).T)  # noqa: E731
    full_only, composite = [], {lam: [] for lam in LAMBDAS}
    for _ in range(trials):
        full = rng.multivariate_normal(np.zeros(4), cov, size=50)
        clips = rng.multivariate_normal(np.zeros(4), cov, size=5000)
        views = np.zeros((4, 4))
        for clip in ([0, 1], [2, 3]):
            views[np.ix_(clip, clip)] = -np.linalg.inv(np.cov(clips[:, clip].T) + sigma ** 2 * np.eye(2))
        x0 = np.repeat(full, 40, axis=0)
        x = x0 + sigma * rng.standard_normal(x0.shape)
        target = -(x - x0) / sigma ** 2  # ∇ log p(x_σ | x0)
        fit = lambda y: np.linalg.solve(x.T @ x, x.T @ y).T  # noqa: E731  (least squares, linear in x)
        full_only.append(mse(fit(target)))
        for lam in LAMBDAS:
            composite[lam].append(mse(views + fit(target - x @ views.T) / (1 + lam)))
    return {lam: float(np.mean(full_only) / np.mean(errors)) for lam, errors in composite.items()}


def test_views_plus_a_regularised_residual_beat_scarce_full_data_and_the_gain_shrinks_with_correlation():
    gains = {rho: two_stage_gains(rho) for rho in (0.3, 0.6, 0.9)}
    for rho in gains:  # unpenalised, the residual undoes the views: full-data DSM exactly
        assert gains[rho][0.0] == pytest.approx(1.0)
    best = {rho: max(g.values()) for rho, g in gains.items()}
    # measured: 2.95 / 1.41 / 1.20 (λ 1 / 0.3 / 0.1)
    assert best[0.3] > best[0.6] > best[0.9] > 1.05
    assert gains[0.9][1.0] < 1  # λ too large at strong correlation: the product of views is wrong (§2.6)


@pytest.mark.slow
def test_a_bootstrap_views_suite_trains_one_shared_view_model_and_samples_through_the_composite(tmp_path):
    import json

    from conftest import TINY_CELL, run_cli

    from ambient_bench.diffusion.views import ComposedDenoiser
    from ambient_bench.training.loop import load_network

    suite = tmp_path / "views.yaml"
    suite.write_text(TINY_CELL.format(name="views", results=tmp_path / "results")
                     .replace("corruption: {name: gaussian_blur, sigma: 0.6}",
                              "corruption: {name: pixelate, factor: 2}")
                     .replace("method: clean_only", "method: {name: bootstrap_views, factor: 2}")
                     + "grid:\n  method.lam: [0.1, 1.0]\n")
    result = run_cli("run", str(suite), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    stages = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "train").glob("*/stage.json")]
    views = [s for s in stages if "view" in s["reads"]]
    assert len(views) == 1 and len(stages) == 3  # one view model serves both penalties
    residual = next(p.parent for p in (tmp_path / "runs" / "train").glob("*/stage.json")
                    if "view" not in json.loads(p.read_text())["reads"])
    net = load_network(residual / "network.pt")
    assert isinstance(net, ComposedDenoiser) and net.image_shape == (1, 8, 8)
    x = torch.randn(2, 1, 8, 8)
    assert torch.isfinite(net(x, torch.tensor([1.0, 1.0]))).all()
    [summary] = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "annotate").glob("*/summary.json")][:1]
    assert summary["view_images"] > summary["full_images"] > 0
    mismatch = tmp_path / "blur.yaml"
    mismatch.write_text(suite.read_text().replace("pixelate, factor: 2", "gaussian_blur, sigma: 0.6"))
    failed = run_cli("run", str(mismatch), "--runs", str(tmp_path / "other"))
    assert failed.returncode == 2 and "pixelate with factor 2" in failed.stderr and not (tmp_path / "other").exists()
    crops = tmp_path / "crops.yaml"  # the second kind of view: 2×2 disjoint crops, one position-conditioned model
    crops.write_text(suite.read_text().replace("pixelate, factor: 2", "grid_crop, grid: 2")
                     .replace("{name: bootstrap_views, factor: 2}", "{name: bootstrap_views, view: crops, grid: 2}")
                     .replace("method.lam: [0.1, 1.0]", "method.lam: [0.1]"))
    result = run_cli("run", str(crops), "--runs", str(tmp_path / "crop_runs"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trained = {p.parent: json.loads(p.read_text()) for p in (tmp_path / "crop_runs" / "train").glob("*/stage.json")}
    residual = next(d for d, s in trained.items() if "view" not in s["reads"])
    net = load_network(residual / "network.pt")
    assert isinstance(net, ComposedDenoiser) and len(net.ops) == 4 and net.image_shape == (1, 8, 8)
    assert torch.isfinite(net(x, torch.tensor([1.0, 1.0]))).all()


def _mixed_with(spec: dict, seed: int = 3):
    """A 12-image pool, every third image corrupted by ``spec`` the way the mix stage does it."""
    from ambient_bench.components import MixedData
    from ambient_bench.registry import CORRUPTIONS
    from ambient_bench.seeding import numpy_rng

    n = 12
    clean = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    corrupted = torch.arange(n) % 3 == 1
    images = clean.clone()
    rows = torch.nonzero(corrupted).flatten()
    images[rows] = CORRUPTIONS.build(spec).apply(clean[rows], [numpy_rng("corruption", seed, int(i)) for i in rows])
    return MixedData(images=(images * 255).round().to(torch.uint8), corrupted=corrupted, ood=torch.zeros(n, dtype=bool),
                     noise=torch.zeros(n, 1, 8, 8), index=torch.arange(n),
                     corruption=torch.where(corrupted, 0, -1).to(torch.int8))


@pytest.mark.parametrize("name", ["pool", "crops"])
def test_view_contract(name):
    from ambient_bench.registry import VIEWS

    cls = VIEWS.get(name)
    view = cls(**cls.test_params)
    view.check_mix([cls.test_corruption])
    with pytest.raises(Exception, match="bootstrap_views"):
        view.check_mix([{"name": "gaussian_blur", "sigma": 1.0}])
    data = _mixed_with(cls.test_corruption)
    got = view.training_set(data, [cls.test_corruption], mix_seed=3)
    assert got["images"].dtype == torch.uint8 and len(got["images"]) == len(got["index"])
    assert (got["labels"] is None) == (view.label_dim() == 0)
    if got["labels"] is not None:
        assert int(got["labels"].max()) < view.label_dim()


def test_crop_views_are_the_cells_each_image_kept():
    from ambient_bench.registry import VIEWS

    spec = {"name": "grid_crop", "grid": 2}
    data = _mixed_with(spec)
    got = VIEWS.build({"name": "crops", "grid": 2}).training_set(data, [spec], mix_seed=3)
    assert len(got["images"]) == 8 * 4 + 4  # every cell of the 8 clean images, the kept one of the 4 crops
    for image, row, cell in zip(got["images"], got["index"].tolist(), got["labels"].tolist()):
        r, c = divmod(cell, 2)
        assert torch.equal(image, data.images[row, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4])
        if bool(data.corrupted[row]):  # the kept cell is not the fill; the rest of the image is
            outside = data.images[row].clone()
            outside[:, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 0
            assert not (outside > 0).any() and image.float().mean() > 0


def test_crops_of_independent_cells_compose_the_exact_score():
    """Cells independent (white Gaussian data): the crop views' exact denoisers give the full one, the residual is 0."""
    from ambient_bench.diffusion.views import GridCell, composite_denoiser

    x, sigma = torch.randn(5, 2, 6, 6), torch.full((5,), 0.7)
    exact = lambda v, s: v / (1 + s.reshape(-1, 1, 1, 1) ** 2)  # noqa: E731  N(0, I) data
    cells = [(GridCell(3, k), exact) for k in range(9)]
    assert torch.allclose(composite_denoiser(x, sigma, cells), exact(x, sigma), atol=1e-6)
    for k in range(9):  # Vᵀ is V's adjoint: <Vx, v> = <x, Vᵀv>
        op, v = GridCell(3, k), torch.randn(5, 2, 2, 2)
        assert torch.allclose((op.apply(x) * v).sum(), (x * op.adjoint(v)).sum(), atol=1e-5)
