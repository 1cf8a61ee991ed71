"""The official release's variants beside the paper's (README "The paper's variant and the release's"):
the ``ambient_release`` objective, ``never_crossed: drop | top`` and ``grid: quantile | random`` on the
classifier annotator. Nothing here imports the release: the numbers it states are written out."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from ambient_bench.annotation.sigma_min import (SigmaMinResult, annotation_grid, first_crossing, lognormal_grid,
                                                random_grid, resolve_never_crossed)
from ambient_bench.components import AnnotationContext, TrainBatch
from ambient_bench.data.mixing import mix
from ambient_bench.registry import CORRUPTIONS, DATASETS, METHODS, OBJECTIVES
from ambient_bench.training.stream import AdmissibleStream

SD = 0.5


def linear_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A closed-form x0-prediction: EDM's c_skip·x plus a fixed σ-dependent shrink."""
    s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
    return SD ** 2 / (s ** 2 + SD ** 2) * x + 0.3 * s / (1 + s) * x.flip(-1)


def batch_of(n: int = 6, seed: int = 0) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((n, 2, 4, 4), generator=g) * 2 - 1
    sigma_min = torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0, 2.0], dtype=torch.float64)[:n]  # two clean, four annotated
    sigma = torch.tensor([0.1, 3.0, 0.9, 1.5, 4.0, 2.5], dtype=torch.float64)[:n]      # each above b·sigma_min
    return TrainBatch(x0=x0, z=torch.randn(x0.shape, generator=g), sigma=sigma, sigma_min=sigma_min,
                      eps=torch.randn(x0.shape, generator=g))


def test_release_loss_is_edm_loss_toward_the_stored_image_with_weight_one():
    batch = batch_of()
    release = OBJECTIVES.build({"name": "ambient_release"}).loss(linear_denoiser, batch)
    expected = []  # λ_EDM(σ)·||D(x0 + σ·ε, σ) − x0||², per sample, written out
    for i in range(len(batch.x0)):
        s = float(batch.sigma[i])
        x_t = batch.x0[i] + s * batch.eps[i]
        d = linear_denoiser(x_t[None], torch.tensor([s]))[0]
        expected.append((s ** 2 + SD ** 2) / (s * SD) ** 2 * float(((d - batch.x0[i]) ** 2).sum()))
    np.testing.assert_allclose(release.numpy(), expected, rtol=1e-5)
    # the same numbers as the edm objective on every sample, clean or annotated: no annotation noise, weight 1
    edm = OBJECTIVES.build({"name": "edm"}).loss(linear_denoiser, batch)
    assert torch.equal(release, edm)
    # the paper's objective agrees on the clean samples only (sigma_n = sigma_min > 0 on the annotated ones)
    paper = OBJECTIVES.build({"name": "ambient"}).loss(linear_denoiser, batch)
    np.testing.assert_allclose(paper[:2].numpy(), expected[:2], rtol=1e-5)
    assert all(abs(float(paper[i]) - expected[i]) > 1e-3 * expected[i] for i in range(2, 6))


def test_release_objective_draws_annotated_samples_only_above_the_buffer():
    objective = OBJECTIVES.build({"name": "ambient_release"})
    b = objective.buffer()
    assert b == pytest.approx(2 / math.sqrt(3))  # the release's scripts: --s_max 4, b = sqrt(1 + 1/(s_max - 1))
    assert OBJECTIVES.build({"name": "ambient_release", "s_max": float("inf")}).buffer() == 1.0
    sigma_min = np.array([0.0, 1.0, 2.0])
    stream = AdmissibleStream(sigma_min, np.zeros(3), b, seed=0)
    rng = np.random.default_rng(0)
    indices, sigmas = stream.batch(lambda: float(np.exp(-1.2 + 1.2 * rng.standard_normal())), 4000)
    for i in (1, 2):  # the low-quality samples: never at or below b·sigma_min, and used above it
        assert (sigmas[indices == i] > b * sigma_min[i]).all() and (indices == i).sum() > 20
    assert sigmas[indices == 0].min() < 0.1  # the clean one at every level


def test_release_objective_is_chosen_in_the_methods_objective_slot():
    base = {"name": "ambient_o", "annotate": "fixed", "sigma_min": 1.0}
    release = METHODS.build({**base, "objective": "ambient_release"})
    paper = METHODS.build(base)
    assert release.objective_spec() == {"name": "ambient_release", "s_max": 4.0}
    assert paper.objective_spec()["name"] == "ambient"
    assert release.annotation_spec() == paper.annotation_spec()  # the objective is the train stage's alone


def test_random_grid_is_sorted_reproducible_and_log_normal_as_the_releases():
    """The release's grid (annotate.py:109-111) is 2,048 sorted draws exp(1.2·n − 1.2) from a CUDA generator
    seeded 42; ours draws on the CPU generator, so this checks the distribution, not the release's numbers."""
    grid = random_grid(2048)
    assert grid.shape == (2048,) and np.all(np.diff(grid) >= 0)
    np.testing.assert_array_equal(grid, random_grid(2048))  # reproducible
    np.testing.assert_array_equal(annotation_grid("random", 2048), grid)
    # the release's distribution, LogNormal(-1.2, 1.2), and not the quantile grid
    assert scipy.stats.kstest(np.log(grid), "norm", args=(-1.2, 1.2)).pvalue > 0.01
    assert not np.allclose(grid, lognormal_grid(2048))
    np.testing.assert_array_equal(annotation_grid("quantile", 64), lognormal_grid(64))
    assert len(random_grid(16, -0.4, 1.0)) == 16


def test_never_crossed_top_keeps_a_curve_at_the_grids_largest_sigma_and_drop_drops_it():
    sigmas = np.array([0.1, 0.2, 0.4, 0.8])
    smoothed = np.array([[0.9, 0.54, 0.6, 0.3], [0.9, 0.8, 0.7, 0.6]])  # the second never falls below 0.55
    crossing = first_crossing(smoothed, sigmas, 0.55)
    sigma_min, keep = resolve_never_crossed(crossing, sigmas, "drop")
    assert keep.tolist() == [True, False] and sigma_min[0] == 0.2
    sigma_min, keep = resolve_never_crossed(crossing, sigmas, "top")
    assert keep.tolist() == [True, True] and sigma_min.tolist() == [0.2, 0.8]
    with pytest.raises(ValueError, match="never_crossed"):
        resolve_never_crossed(crossing, sigmas, "keep")


@pytest.mark.parametrize("mode", ["drop", "top"])
def test_classifier_annotator_applies_never_crossed_and_the_grid(mode, tmp_path, monkeypatch):
    """The annotator's glue: the classifier's crossings (stubbed) become sigma_min and keep."""
    import ambient_bench.annotation.figures as figures
    import ambient_bench.annotation.sigma_min as sigma_min_module
    import ambient_bench.annotators.classifier as annotator_module

    data = DATASETS.build({"name": "digits", "resolution": 8}).load()
    pool = mix(data, 0.5, [CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.0})], seed=0)
    seen = {}

    def stub_annotate(classifier, images, indices, **kw):
        seen.update(kw)
        sigmas = annotation_grid(kw["grid"], kw["num_sigmas"])
        m = len(images)
        crossing = np.where(np.arange(m) % 2 == 0, sigmas[3], np.inf)  # every other image never crosses
        return SigmaMinResult(sigmas, np.full((m, len(sigmas)), 0.6), np.full((m, len(sigmas)), 0.6), crossing, 0.55)

    monkeypatch.setattr(sigma_min_module, "annotate_sigma_min", stub_annotate)
    monkeypatch.setattr(annotator_module, "load_classifier", lambda path, device: None)
    monkeypatch.setattr(figures, "plot_classifier_curves", lambda *a, **k: None)
    method = METHODS.build({"name": "ambient_o", "annotate": "classifier", "num_sigmas": 16, "grid": "random",
                            "never_crossed": mode, "max_dropped_fraction": 1.0})
    ann = method.annotate(pool, AnnotationContext(workdir=tmp_path, classifiers={"noise": tmp_path / "c.pt"}))
    low = pool.corrupted & ~pool.ood
    grid = random_grid(16)
    assert seen["grid"] == "random" and ann.summary["grid"] == [grid[0], grid[-1], 16]
    crossed = torch.from_numpy(np.arange(int(low.sum())) % 2 == 0)
    assert ann.sigma_min[low][crossed].tolist() == pytest.approx([grid[3]] * int(crossed.sum()))
    assert ann.summary["never_crossed"] == int((~crossed).sum()) > 0
    if mode == "drop":
        assert ann.keep[low].tolist() == crossed.tolist()
    else:
        assert ann.keep[low].all() and ann.sigma_min[low][~crossed].tolist() == pytest.approx(
            [grid[-1]] * int((~crossed).sum()))
    assert ann.keep[~low].all() and (ann.sigma_min[~low] == 0).all()


def test_defaults_keep_the_annotate_key():
    """grid: quantile and never_crossed: drop stay out of keys, so stored annotations stay valid."""
    base = {"name": "ambient_o", "annotate": "classifier", "num_sigmas": 256}
    plain = METHODS.build(base).annotation_spec()
    assert "grid" not in plain["params"] and "never_crossed" not in plain["params"]
    assert METHODS.build({**base, "grid": "quantile", "never_crossed": "drop"}).annotation_spec() == plain
    for variant in ({"grid": "random"}, {"never_crossed": "top"}):
        assert METHODS.build({**base, **variant}).annotation_spec() != plain
