"""Quality scorers, patch scores, the true-rank split and the "+crops" patch sigma_max rule."""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
import torch
import torchvision

from ambient_bench.annotation.quality import (
    QUALITY_SCORERS,
    LaplacianSharpness,
    QualityScorer,
    build_scorer,
    high_quality_split,
    image_tiles,
    patch_scores,
    patch_sigma_max,
    top_count,
    true_rank,
)
from ambient_bench.errors import UserError
from ambient_bench.registry import CORRUPTIONS, DATASETS


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return DATASETS.build({"name": "natural_patches", "resolution": 32, "count": 16}).load().images


def corrupt(images: torch.Tensor, spec: dict) -> torch.Tensor:
    rngs = [np.random.default_rng(i) for i in range(len(images))]
    out = CORRUPTIONS.build(spec).apply(images.float() / 255, rngs)
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


def test_sharpness_ranks_clean_above_blur_and_heavy_jpeg(photos):
    scorer = build_scorer("laplacian_sharpness")
    clean = scorer.score(photos, batch=5)
    assert clean.dtype == np.float64 and clean.shape == (16,)
    blurred = scorer.score(corrupt(photos, {"name": "gaussian_blur", "sigma": 1.0}))
    assert np.all(clean > blurred)
    # q = 10 adds 8×8 block edges, which on near-flat patches outweigh the lost detail: the
    # measure drops for most images and in the median, not for every single one
    jpeg = scorer.score(corrupt(photos, {"name": "jpeg", "quality": 10}))
    assert np.mean(clean > jpeg) >= 0.75 and np.median(jpeg / clean) < 0.8


def test_sharpness_grey_equals_luma_of_repeated_channels(photos):
    scorer = LaplacianSharpness()
    grey = photos[:, :1]
    np.testing.assert_allclose(scorer.score(grey), scorer.score(grey.repeat(1, 3, 1, 1)), rtol=1e-9)


def test_image_tiles_grid_and_dropped_edges():
    images = torch.arange(2 * 1 * 10 * 10, dtype=torch.int64).reshape(2, 1, 10, 10).to(torch.uint8)
    tiles = image_tiles(images, 4)  # 10 = 2·4 + 2: the 2-pixel edge strips are dropped
    assert tiles.shape == (2 * 4, 1, 4, 4)
    assert torch.equal(tiles[3], images[0, :, 4:8, 4:8]) and torch.equal(tiles[5], images[1, :, 0:4, 4:8])
    with pytest.raises(UserError, match="does not fit"):
        image_tiles(images, 11)


@pytest.mark.parametrize("patch", [8, 12, 32])
def test_patch_scores_equal_a_per_tile_loop(photos, patch):
    scorer = LaplacianSharpness()
    expected = []
    for image in photos:
        per_tile = [scorer.score(image[None, :, top:top + patch, left:left + patch])[0]
                    for top in range(0, 32 - patch + 1, patch) for left in range(0, 32 - patch + 1, patch)]
        expected.append(np.mean(per_tile))
    np.testing.assert_allclose(patch_scores(scorer, photos, patch, batch=7), expected, rtol=1e-12)


class PositionWeighted(QualityScorer):
    """A stand-in for CLIP: a position-dependent linear score, so any resize difference shows."""

    name = "position_weighted"
    needs_resize_to = 24

    def _score_batch(self, x: torch.Tensor) -> np.ndarray:
        weights = torch.linspace(-1, 2, x.shape[-1] * x.shape[-2], dtype=torch.float64).reshape(x.shape[-2:])
        return (x.double() * weights).sum(dim=(1, 2, 3)).numpy()


def test_patch_scores_resize_like_the_release(photos):
    """Tiles below needs_resize_to go through torchvision Resize((s, s)) in float, as the release does."""
    scorer, patch = PositionWeighted(), 8
    resize = torchvision.transforms.Resize((24, 24))
    x = photos[:3].float() / 255
    expected = [np.mean([scorer.score(resize(x[i:i + 1, :, t:t + patch, c:c + patch]))[0]
                         for t in range(0, 32, patch) for c in range(0, 32, patch)]) for i in range(3)]
    np.testing.assert_allclose(patch_scores(scorer, photos[:3], patch, batch=5), expected, rtol=1e-5)


def buggy_release_split(scores: np.ndarray, top_fraction: float) -> np.ndarray:
    """The official latent training loop: 'rank' = arange(N)[argsort(q, descending)]."""
    rank = np.arange(len(scores))[np.argsort(-scores, kind="stable")]
    return rank < int(len(scores) * top_fraction)


def test_true_rank_split_fixes_the_release_rank_bug():
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3])
    np.testing.assert_array_equal(true_rank(scores), [4, 0, 3, 1, 2])
    ours = high_quality_split(scores, 0.4)
    np.testing.assert_array_equal(np.flatnonzero(ours), [1, 3])  # the two best images
    buggy = buggy_release_split(scores, 0.4)
    assert buggy.sum() == ours.sum()  # the release gets the count right ...
    np.testing.assert_array_equal(np.flatnonzero(buggy), [0, 4])  # ... but picks the two worst here


def test_true_rank_ties_nan_and_counts():
    np.testing.assert_array_equal(true_rank(np.array([1.0, 2.0, 2.0, np.nan, 1.0])), [2, 0, 1, 4, 3])
    assert top_count(100, 0.29) == 29 and top_count(10, 0.95) == 9 and top_count(3, 1.0) == 3
    assert high_quality_split(np.arange(10.0), 0.0).sum() == 0
    with pytest.raises(UserError):
        top_count(10, 1.5)


def test_patch_sigma_max_larger_sizes_overwrite_smaller():
    table = {4: 0.1, 8: 0.175, 16: 0.2}
    means = {  # deliberately not in increasing order: the rule sorts the sizes
        16: np.array([0.0, 0.0, 0.9, 0.8]),
        4: np.array([0.9, 0.8, 0.0, 0.0]),
        8: np.array([0.0, 0.9, 0.8, 0.0]),
    }
    # top half per size: 4 → {0, 1}; 8 → {1, 2}; 16 → {2, 3}; image 0 keeps size 4's value
    np.testing.assert_allclose(patch_sigma_max(means, 0.5, table), [0.1, 0.175, 0.2, 0.2])
    np.testing.assert_allclose(patch_sigma_max({4: means[4]}, 0.25, table), [0.1, 0, 0, 0])
    with pytest.raises(UserError, match="no sigma_max"):
        patch_sigma_max({32: means[4]}, 0.5, table)


def test_unknown_scorer_suggests_a_name():
    with pytest.raises(UserError, match="did you mean 'laplacian_sharpness'"):
        build_scorer("laplacian_sharpnes")
    assert set(QUALITY_SCORERS) == {"clip_iqa", "clip_iqa_pyiqa", "laplacian_sharpness"}


def test_missing_piq_weights_is_one_actionable_line(tmp_path, monkeypatch):
    pytest.importorskip("piq")
    monkeypatch.setenv("HOME", str(tmp_path))  # piq looks in ~/.cache/clip
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError) as err:
        build_scorer("clip_iqa")
    message = str(err.value)
    assert "\n" not in message and "RN50.pt" in message and "clipiqa_tokens.pt" in message
    assert "https://github.com/photosynthesis-team/piq/releases/download/" in message
    assert os.path.join(str(tmp_path), ".cache", "clip") in message


def test_pyiqa_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # makes `import pyiqa` raise ImportError
    with pytest.raises(UserError, match=r'pip install pyiqa "setuptools>=77\.0\.3,<82"'):
        build_scorer("clip_iqa_pyiqa")


def write_tiny_clip(directory) -> None:
    """A random, tiny RN-style CLIP saved as TorchScript, plus prompt tokens: piq's file formats."""
    from piq.feature_extractors.clip import CLIP
    torch.manual_seed(0)
    model = CLIP(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=8,
                 vision_patch_size=None, context_length=77, vocab_size=512, transformer_width=64,
                 transformer_heads=1, transformer_layers=1).eval()
    tokens = torch.randint(1, 512, (2, 77))  # piq reads the vocabulary size from the weights
    directory.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and torch.jit deprecation notices
        traced = torch.jit.trace(model, (torch.rand(1, 3, 64, 64), tokens), check_trace=False)
        torch.jit.save(traced, str(directory / "RN50.pt"))
    torch.save(tokens, directory / "clipiqa_tokens.pt")


def test_clip_iqa_runs_offline_with_placed_files(tmp_path, monkeypatch, photos):
    piq = pytest.importorskip("piq")
    monkeypatch.setenv("HOME", str(tmp_path))
    write_tiny_clip(tmp_path / ".cache" / "clip")
    scorer = build_scorer("clip_iqa")
    assert scorer.needs_resize_to == 224
    scores = scorer.score(photos[:4], batch=3)
    assert scores.dtype == np.float64 and scores.shape == (4,) and np.all((scores > 0) & (scores < 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = piq.CLIPIQA(data_range=1.0)(photos[:4].float() / 255).reshape(-1).double().numpy()
    np.testing.assert_allclose(scores, reference, rtol=1e-5)
    grey = scorer.score(photos[:2, :1])  # repeated to 3 channels inside
    np.testing.assert_allclose(grey, scorer.score(photos[:2, :1].repeat(1, 3, 1, 1)), rtol=1e-6)
    assert patch_scores(scorer, photos[:2], 16, batch=8).shape == (2,)
