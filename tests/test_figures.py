from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ambient_bench.annotation import figures


def assert_png(path: Path, returned: Path, min_side: int = 200) -> None:
    assert returned == path and path.stat().st_size > 0
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        assert min(picture.size) >= min_side and max(picture.size) <= 4000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def naive_counts(sigmas, sigma_min, sigma_max, buffer, groups):
    out = {}
    for group, mask in groups.items():
        counts = np.zeros(len(sigmas), dtype=np.int64)
        for j, s in enumerate(sigmas):
            for i in range(len(sigma_min)):
                if mask[i] and (s > buffer * sigma_min[i] or s < sigma_max[i]):
                    counts[j] += 1
        out[group] = counts
    return out


def test_usable_counts_matches_naive_loop():
    rng = np.random.default_rng(0)
    n = 150
    sigma_min = np.exp(rng.uniform(np.log(0.01), np.log(50), n))
    sigma_min[rng.random(n) < 0.15] = np.inf
    sigma_max = np.exp(rng.uniform(np.log(0.005), np.log(5), n))
    sigma_max[rng.random(n) < 0.2] = 0.0
    sigma_max[:3] = sigma_min[:3] * 2  # no hole at all: usable everywhere
    sigmas = np.concatenate([np.geomspace(0.002, 80, 60), sigma_min[5:8], sigma_max[10:13]])  # exact ties too
    labels = rng.integers(0, 3, n)
    groups = {"clean": labels == 0, "corrupted": labels == 1, "out-of-distribution": labels == 2}
    for buffer in (1.0, 1.7):
        got = figures.usable_counts(sigmas, sigma_min, sigma_max, buffer, groups)
        want = naive_counts(sigmas, sigma_min, sigma_max, buffer, groups)
        assert list(got) == list(want)
        for group in groups:
            np.testing.assert_array_equal(got[group], want[group])
    inf_only = figures.usable_counts(np.array([80.0]), np.array([np.inf]), np.array([0.0]), 1.0,
                                     {"g": np.array([True])})
    assert inf_only["g"].tolist() == [0]


def test_usable_counts_donut():
    counts = figures.usable_counts(np.array([0.05, 0.5, 2.0]), np.array([1.0]), np.array([0.1]), 1.0,
                                   {"only": np.array([True])})
    assert counts["only"].tolist() == [1, 0, 1]


def test_plot_classifier_curves(tmp_path: Path):
    sigmas = np.geomspace(0.002, 80, 40)
    centres = np.array([0.1, 0.5, 2.0, 10.0, 1e6])
    smoothed = 0.5 + 0.5 / (1 + (sigmas[None] / centres[:, None]) ** 2)
    raw = np.clip(smoothed + np.random.default_rng(0).normal(0, 0.05, smoothed.shape), 0, 1)
    sigma_min = np.array([0.1, 0.5, 2.0, 10.0, np.inf])
    sigma_min[1] = np.nan
    path = tmp_path / "curves.png"
    assert_png(path, figures.plot_classifier_curves(path, sigmas, raw, smoothed, 0.55, sigma_min))
    with pytest.raises(ValueError):
        figures.plot_classifier_curves(path, sigmas[:-1], raw, smoothed, 0.55, sigma_min)


def test_plot_sigma_min_histogram(tmp_path: Path):
    rng = np.random.default_rng(1)
    groups = {"blur 0.4": np.exp(rng.normal(0, 0.5, 100)),
              "blur 1.0": np.append(np.exp(rng.normal(1.5, 0.4, 80)), np.inf),
              "empty": np.array([np.inf])}
    path = tmp_path / "hist.png"
    assert_png(path, figures.plot_sigma_min_histogram(path, groups, {"blur 0.4": 0, "blur 1.0": 3}))


def test_plot_usable_samples(tmp_path: Path):
    rng = np.random.default_rng(2)
    n = 300
    labels = np.repeat([0, 1, 2], [30, 170, 100])
    sigma_min = np.where(labels == 0, 0.0, np.exp(rng.normal(0, 0.7, n)))
    sigma_max = np.where(labels == 1, 0.0, np.exp(rng.normal(-1, 0.5, n)))
    groups = {"clean": labels == 0, "corrupted": labels == 1, "out-of-distribution": labels == 2}
    path = tmp_path / "nested" / "usable.png"
    assert_png(path, figures.plot_usable_samples(path, sigma_min, sigma_max, 1.2, groups, reference_count=200))


@pytest.mark.parametrize("size,crop,channels", [(32, 8, 3), (64, 24, 1)])
def test_plot_patch_probabilities(tmp_path: Path, size: int, crop: int, channels: int):
    image = torch.randint(0, 256, (channels, size, size), dtype=torch.uint8)
    tiles = -(-size // crop)
    probs = np.random.default_rng(3).random((tiles, tiles))
    probs[0, 0] = np.nan
    path = tmp_path / "patches.png"
    assert_png(path, figures.plot_patch_probabilities(path, image, probs, crop, title="cat: P(dog)"), min_side=256)
    with pytest.raises(ValueError):
        figures.plot_patch_probabilities(path, image.numpy(), np.zeros((tiles + 1, tiles)), crop)


def test_plot_context_curves_and_table(tmp_path: Path):
    contexts = np.array([2, 4, 8, 16, 32, 64])
    sigmas = np.array([0.05, 0.2, 1.0, 5.0])
    losses = 0.1 * sigmas[:, None] * (1 + 4 * np.exp(-contexts[None] / (4 * (1 + sigmas[:, None]))))
    plateau = np.array([4.0, 8.0, 16.0, np.nan])
    path = tmp_path / "context.png"
    assert_png(path, figures.plot_context_curves(path, contexts, sigmas, losses, plateau))
    table = tmp_path / "table.png"
    assert_png(table, figures.plot_context_table(table, sigmas, plateau))
