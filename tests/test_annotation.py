"""Noise and crops classifiers, the sigma_min crossing search and the crops sigma_max rule."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ambient_bench.annotation.classifier_net import HalfUNet, build_classifier, parameter_count
from ambient_bench.annotation.classifier_training import CLASSIFIER_SECTION, load_classifier, train_classifier
from ambient_bench.annotation.crops import (choose_sigma_max, scaled_crop_sizes, scaled_table, tile_canvases,
                                            tile_origins, window_mask)
from ambient_bench.annotation.sigma_min import (CHUNK_BYTES, annotate_sigma_min, auto_batch, causal_ema,
                                                classifier_probabilities, classifier_probabilities_looped,
                                                first_crossing, lognormal_grid, scaled_span, widest_activation_bytes)
from ambient_bench.data.images import uint8_to_model
from ambient_bench.data.mixing import mix
from ambient_bench.registry import CORRUPTIONS, DATASETS


def tiny_cfg(**over):
    return CLASSIFIER_SECTION.resolve({"batch": 16, "duration_kimg": 0.16, "log_every": 1000, "checkpoint_kimg": 100,
                                       "model_channels": 8, **over}, ())


def test_causal_ema_matches_the_recursion():
    values = np.random.default_rng(0).random((3, 50))
    alpha = 2 / 33
    expected = values.copy()
    for k in range(1, 50):
        expected[:, k] = (1 - alpha) * expected[:, k - 1] + alpha * values[:, k]
    np.testing.assert_allclose(causal_ema(values, 32), expected, rtol=1e-12)


def test_lognormal_grid_and_span():
    grid = lognormal_grid(2048)
    assert np.all(np.diff(grid) > 0) and 0.004 < grid[0] < 0.01 and 15 < grid[-1] < 25
    assert abs(np.median(np.log(grid)) + 1.2) < 1e-3
    assert scaled_span(2048) == 32 and scaled_span(256) == 4 and scaled_span(16) == 1


def test_first_crossing_takes_the_first_level_below_and_inf_when_never():
    sigmas = np.array([0.1, 0.2, 0.4, 0.8])
    smoothed = np.array([[0.9, 0.54, 0.6, 0.3], [0.9, 0.8, 0.7, 0.6], [0.5, 0.9, 0.9, 0.9]])
    assert first_crossing(smoothed, sigmas, 0.55).tolist() == [0.2, np.inf, 0.1]


class Thresholder(torch.nn.Module):
    """P(corrupted) = sigmoid(k·(s0 - sigma)) shifted per image by its mean pixel: a known crossing."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return 20 * (1.0 + x.mean(dim=(1, 2, 3)).clamp(-0.5, 0.5) - sigma)


def test_batched_probabilities_equal_the_per_image_loop_and_ignore_chunking():
    images = torch.rand(5, 1, 4, 4) * 0.2 - 0.1
    indices = torch.tensor([3, 9, 1, 4, 7])
    sigmas = lognormal_grid(70)
    looped = classifier_probabilities_looped(Thresholder(), images, indices, sigmas, trials=3, seed=1)
    for batch in (None, 64, 500, 100_000):
        batched = classifier_probabilities(Thresholder(), images, indices, sigmas, trials=3, seed=1, batch=batch)
        np.testing.assert_allclose(batched, looped, atol=1e-6)
    # an image's noise depends on its identity, not on its neighbours
    alone = classifier_probabilities(Thresholder(), images[2:3], indices[2:3], sigmas, trials=3, seed=1)
    np.testing.assert_allclose(alone[0], looped[2], atol=1e-6)


def test_auto_batch_fits_the_widest_activation_in_the_device_budget():
    cpu = torch.device("cpu")
    small = build_classifier({"preset": "cpu"}, img_channels=1, resolution=16)  # widest: 16 channels at 16×16
    assert widest_activation_bytes(small, (1, 16, 16), cpu) == 16 * 16 * 16 * 4
    assert auto_batch(small, (1, 16, 16), cpu) == CHUNK_BYTES["cpu"] // (16 * 16 * 16 * 4)
    wide = build_classifier({"preset": "cpu", "model_channels": 64}, img_channels=1, resolution=16)
    assert auto_batch(wide, (1, 16, 16), cpu) == auto_batch(small, (1, 16, 16), cpu) // 4


def test_sigma_min_follows_the_classifier_and_drops_images_that_never_cross():
    images = torch.zeros(2, 1, 64, 64)  # large enough that the noise barely moves the image mean
    images[1] -= 10.0  # mean clamps at -0.5: crossing near sigma = 0.5
    result = annotate_sigma_min(Thresholder(), images, torch.arange(2), num_sigmas=256, trials=2, ema_span=1)
    assert 0.9 < result.sigma_min[0] < 1.1 and 0.4 < result.sigma_min[1] < 0.6
    never = annotate_sigma_min(lambda x, s: torch.full((len(x),), 5.0), images, torch.arange(2), num_sigmas=32)
    assert np.isinf(never.sigma_min).all()


def test_half_unet_outputs_one_logit_and_presets_build():
    net = build_classifier({"preset": "cpu"}, img_channels=3, resolution=16)
    assert net(torch.randn(4, 3, 16, 16), torch.rand(4) + 0.1).shape == (4,)
    with torch.device("meta"):
        cifar = HalfUNet(3, 32, model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16])
    # the paper's CIFAR-10 noise classifier: the DDPM++ encoder, about 19.6 M parameters
    assert abs(parameter_count(cifar) - 19.6e6) < 0.01 * 19.6e6


def test_window_mask_and_tiles():
    mask = window_mask(8, 3, torch.tensor([0, 5]), torch.tensor([2, 5]))
    assert mask[0, 0, :3, 2:5].all() and mask[0].sum() == 9 and mask[1, 0, 5:, 5:].all() and mask[1].sum() == 9
    assert tile_origins(64, 24) == [(t, c) for t in (0, 24, 48) for c in (0, 24, 48)]
    images = torch.rand(2, 3, 10, 10) + 0.5
    canvases = tile_canvases(images, 4)             # 3×3 tiles, edge tiles 2 px wide
    assert canvases.shape == (2, 9, 3, 10, 10)
    assert torch.allclose(canvases.sum(1), images)  # tiles partition the image
    assert (canvases[:, 8, :, :8] == 0).all() and (canvases[:, 8, :, 8:, 8:] > 0).all()


def test_choose_sigma_max_takes_the_largest_passing_crop():
    table = {2: 0.05, 4: 0.15, 8: 0.2}
    means = {2: np.array([0.9, 0.1, 0.9, 0.9]), 4: np.array([0.9, 0.1, 0.1, 0.3]), 8: np.array([0.1, 0.1, 0.9, 0.26])}
    assert choose_sigma_max(means, table, 0.25).tolist() == [0.15, 0.05, 0.2, 0.2]
    with pytest.raises(ValueError, match="no entry"):
        choose_sigma_max({3: np.ones(1)}, table, 0.25)
    assert scaled_crop_sizes(64) == [4, 8, 16, 24] and scaled_crop_sizes(32) == [2, 4, 8, 12]
    assert scaled_table(64)[24] == 0.35 and scaled_table(32)[12] == 0.35


def test_classifier_training_resumes_exactly(tmp_path):
    data = DATASETS.build({"name": "digits", "resolution": 8}).load()
    pool = mix(data, 0.5, [CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.0})], seed=0)
    cfg = tiny_cfg(checkpoint_kimg=0.032)
    assert train_classifier(pool.images, pool.corrupted, cfg, cfg, tmp_path / "whole", log=lambda s: None)
    assert not train_classifier(pool.images, pool.corrupted, cfg, cfg, tmp_path / "cut", crop_size=None,
                                log=lambda s: None, stop_at_step=3)
    assert train_classifier(pool.images, pool.corrupted, cfg, cfg, tmp_path / "cut", log=lambda s: None)
    whole, cut = (torch.load(tmp_path / d / "classifier.pt", weights_only=False)["ema"] for d in ("whole", "cut"))
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    net = load_classifier(tmp_path / "whole" / "classifier.pt")
    assert net.crop_size is None and not net.training


def test_classifier_trains_with_augmentation_labels_and_keeps_keys_without(tmp_path):
    from ambient_bench.annotation.classifier_training import CLASSIFIER_SECTION

    data = DATASETS.build({"name": "digits", "resolution": 8}).load()
    pool = mix(data, 0.5, [CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.0})], seed=0)
    cfg = {**tiny_cfg(checkpoint_kimg=0.032), "augment_p": 0.5}
    assert train_classifier(pool.images, pool.corrupted, cfg, cfg, tmp_path / "aug", log=lambda s: None)
    net = load_classifier(tmp_path / "aug" / "classifier.pt")
    assert net.net.augment_dim == 9
    x = torch.zeros(2, 1, 8, 8)
    # all-zero labels = not augmented: the same logits as no labels (annotation passes none)
    assert torch.equal(net(x, torch.ones(2)), net(x, torch.ones(2), torch.zeros(2, 9)))
    # augment_p at its default stays out of the classifier's key: stored runs are not recomputed
    plain = CLASSIFIER_SECTION.semantic(CLASSIFIER_SECTION.resolve({}, ("classifier",)))
    assert "augment_p" not in plain
    assert CLASSIFIER_SECTION.semantic(CLASSIFIER_SECTION.resolve({"augment_p": 0.12}, ("c",)))["augment_p"] == 0.12


# --- acceptance (issue 4): mean sigma_min grows with the strength of the corruption --------

@pytest.fixture(scope="module")
def digits8():
    return DATASETS.build({"name": "digits", "resolution": 8}).load()


def mean_sigma_min(digits8, corruption: dict, tmp_path_factory) -> float:
    """A CPU-sized classifier on the balanced (50/50) pool, then annotation of 128 corrupted images.

    Never-crossing images count at the top of the grid, as in the official code, so that a
    corruption the classifier never stops seeing scores high rather than vanishing.
    """
    pool = mix(digits8, 0.5, [CORRUPTIONS.build(corruption)], seed=0)
    cfg = CLASSIFIER_SECTION.resolve({"batch": 64, "duration_kimg": 40, "log_every": 1000, "checkpoint_kimg": 1000}, ())
    out = tmp_path_factory.mktemp("classifier")
    assert train_classifier(pool.images, pool.corrupted, cfg, cfg, out, log=lambda s: None)
    chosen = torch.nonzero(pool.corrupted).flatten()[:128]
    result = annotate_sigma_min(load_classifier(out / "classifier.pt"), uint8_to_model(pool.images[chosen]),
                                pool.index[chosen], num_sigmas=64, trials=2)
    return float(np.where(np.isfinite(result.sigma_min), result.sigma_min, result.sigmas[-1]).mean())


@pytest.mark.slow
@pytest.mark.parametrize("name, key, levels", [("gaussian_blur", "sigma", (0.4, 0.6, 1.0)),
                                               ("jpeg", "quality", (90, 50, 15))])
def test_mean_sigma_min_grows_with_corruption_strength(digits8, tmp_path_factory, name, key, levels):
    means = [mean_sigma_min(digits8, {"name": name, key: level}, tmp_path_factory) for level in levels]
    assert means[0] < means[1] < means[2], f"{name}: mean sigma_min {means} at {key} {levels}"


def test_quality_annotation_finds_the_sharp_images_without_reading_the_corruption_flags(tmp_path):
    from ambient_bench.components import AnnotationContext
    from ambient_bench.registry import METHODS

    data = DATASETS.build({"name": "natural_patches", "resolution": 16, "count": 200}).load()
    pool = mix(data, 0.3, [CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.5})], seed=0)
    method = METHODS.build({"name": "ambient_o", "annotate": "quality", "sigma_min": 1.5,
                            "quality_scorer": "laplacian_sharpness", "quality_top_fraction": 0.25,
                            "quality_patch_sizes": [4, 8], "quality_patch_top_fraction": 0.5})
    ann = method.annotate(pool, AnnotationContext(workdir=tmp_path, classifiers={}))
    good = ann.sigma_min == 0
    assert int(good.sum()) == 50 and set(ann.sigma_min[~good].tolist()) == {1.5}
    assert ann.summary["quality_split_precision"] > 0.6  # 30% of the pool is clean: far above chance
    assert {round(v, 6) for v in ann.sigma_max.tolist()} <= {0.0, 0.2, 0.55}  # 16 px: crop 4 → 0.2, 8 → 0.55
    assert (ann.sigma_max > 0).sum() >= 100 and ann.keep.all()


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_annotation_gives_the_eager_numbers():
    torch.manual_seed(0)
    net = build_classifier({"preset": "cpu", "model_channels": 4}, img_channels=1, resolution=8).eval()
    images, indices = torch.rand(3, 1, 8, 8) * 2 - 1, torch.arange(3)
    eager = annotate_sigma_min(net, images, indices, num_sigmas=64, trials=2, batch=32)
    compiled = annotate_sigma_min(net, images, indices, num_sigmas=64, trials=2, batch=32, compile=True)
    np.testing.assert_allclose(compiled.probabilities, eager.probabilities, atol=1e-6)
    np.testing.assert_array_equal(compiled.sigma_min, eager.sigma_min)
