"""Contract tests run over every registered component with its tiny test parameters."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage
import torch

from ambient_bench import (ANNOTATORS, CORRUPTIONS, DATASETS, METHODS, METRICS, OBJECTIVES, Annotation,
                           AnnotationContext, ImageSet, MixedData, UserError)
from ambient_bench.annotation.classifier_training import train_classifier
from ambient_bench.corruptions.blur import gaussian_kernel1d
from ambient_bench.metrics import features
from ambient_bench.seeding import numpy_rng


def batch(n=4, c=3, h=12, w=10, seed=0):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_corruption_contract(name):
    cls = CORRUPTIONS.get(name)
    assert isinstance(cls.version, int) and cls.version >= 1 and cls.summary()
    corruption = cls(**cls.test_params)
    x = batch()
    rngs = lambda seed: [numpy_rng("test", seed, i) for i in range(len(x))]  # noqa: E731
    out = corruption.apply(x, rngs(0))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert torch.equal(out, corruption.apply(x.clone(), rngs(0)))  # deterministic
    assert not torch.equal(out, x)  # it does something with its test parameters
    if cls.random:
        assert not torch.equal(out, corruption.apply(x, rngs(1)))


@pytest.mark.parametrize("sigma,taps", [(0.4, 5), (0.6, 5), (0.8, 7), (1.0, 9)])
def test_gaussian_blur_matches_scipy(sigma, taps):
    assert len(gaussian_kernel1d(sigma)) == taps
    x = batch(n=3, c=3, h=16, w=11, seed=1)
    ours = CORRUPTIONS.build({"name": "gaussian_blur", "sigma": sigma}).apply(x, [])
    reference = np.stack([scipy.ndimage.gaussian_filter(im, (0, sigma, sigma)) for im in x.numpy()])
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-6)


def test_gaussian_blur_radius_wider_than_image():
    x = batch(n=1, c=1, h=5, w=4)
    ours = CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 3.0}).apply(x, [])
    np.testing.assert_allclose(ours[0, 0].numpy(), scipy.ndimage.gaussian_filter(x[0, 0].numpy(), 3.0), atol=1e-6)


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_contract(name):
    cls = DATASETS.get(name)
    if getattr(cls, "needs_files", False):
        with pytest.raises(UserError):  # nothing on disk here: the one-line error, not a crash
            cls(**cls.test_params).load()
        return
    data = cls(**cls.test_params).load()
    assert isinstance(data, ImageSet) and data.images.dtype == torch.uint8 and data.images.dim() == 4
    assert data.labels is None or len(data.labels) == len(data)
    assert data.content_hash() == cls(**cls.test_params).load().content_hash()


def test_digits_resolution_and_range():
    data = DATASETS.build({"name": "digits", "resolution": 16}).load()
    assert data.images.shape == (1797, 1, 16, 16)
    assert data.images.max() == 255 and data.images.min() == 0
    assert set(data.labels.tolist()) == set(range(10))


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, tmp_path):
    cls = METHODS.get(name)
    n = 30
    data = pool(corrupted=torch.arange(n) % 3 == 1, ood=torch.arange(n) % 3 == 2)
    data.images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    method = cls(**cls.test_params)
    classifiers = {}
    for request_name, request in method.classifiers(resolution=8).items():  # trained as the harness would
        labels = ~data.ood if request.pool == "target_vs_ood" else data.corrupted
        out = tmp_path / request_name
        assert train_classifier(data.images, labels, request.config, request.config, out,
                                crop_size=request.crop_size, log=lambda s: None)
        classifiers[request_name] = out / "classifier.pt"
    ann = method.annotate(data, AnnotationContext(workdir=tmp_path, classifiers=classifiers,
                                                  corruptions=[cls.test_corruption]))
    for field in ("keep", "sigma_min", "sigma_max"):
        assert getattr(ann, field).shape == (n,)
    clean = ~data.corrupted & ~data.ood
    assert ann.keep[clean].all() and (ann.sigma_min[clean] == 0).all()  # clean samples are always usable
    assert OBJECTIVES.build(method.objective_spec()).buffer() >= 1.0  # a valid objective spec


@pytest.mark.parametrize("name", ANNOTATORS.names())
def test_annotator_contract(name, tmp_path):
    cls = ANNOTATORS.get(name)
    assert isinstance(cls.version, int) and cls.version >= 1 and cls.summary() and cls.role in ("low_quality", "ood")
    n = 30
    data = pool(corrupted=torch.arange(n) % 3 == 1, ood=torch.arange(n) % 3 == 2)
    data.images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    annotator = cls(**cls.test_params)
    classifiers = {}
    for request_name, request in annotator.classifiers(resolution=8).items():
        labels = ~data.ood if request.pool == "target_vs_ood" else data.corrupted
        out = tmp_path / request_name
        assert train_classifier(data.images, labels, request.config, request.config, out,
                                crop_size=request.crop_size, log=lambda s: None)
        classifiers[request_name] = out / "classifier.pt"
    ann = Annotation(keep=torch.ones(n, dtype=torch.bool), sigma_min=torch.zeros(n, dtype=torch.float64),
                     sigma_max=torch.zeros(n, dtype=torch.float64))
    annotator.annotate(data, ann, AnnotationContext(workdir=tmp_path, classifiers=classifiers))
    # an annotator touches only the samples of its role (a quality score ranks every in-distribution one)
    untouched = ~data.ood if cls.role == "ood" else data.ood if name == "quality" else ~data.corrupted | data.ood
    assert ann.keep[untouched].all() and (ann.sigma_min[untouched] == 0).all() and (ann.sigma_max[untouched] == 0).all()
    assert ann.sigma_min.dtype == torch.float64 and (ann.sigma_min >= 0).all() and (ann.sigma_max >= 0).all()


def pool(corrupted, ood):
    n = len(corrupted)
    return MixedData(images=torch.zeros(n, 1, 4, 4, dtype=torch.uint8), corrupted=corrupted, ood=ood,
                     noise=torch.zeros(n, 1, 4, 4), index=torch.arange(n),
                     corruption=torch.where(corrupted & ~ood, 0, -1).to(torch.int8))  # Method.test_corruption


def test_method_semantics():
    n = 10
    data = pool(corrupted=torch.arange(n) >= 3, ood=torch.zeros(n, dtype=torch.bool))
    clean_only = METHODS.build({"name": "clean_only"}).annotate(data)
    assert clean_only.keep.tolist() == [True] * 3 + [False] * 7
    all_data = METHODS.build({"name": "all_data"}).annotate(data)
    assert all_data.keep.all() and (all_data.sigma_min == 0).all()
    method = METHODS.build({"name": "ambient_o", "sigma_min": 1.5})
    ambient = method.annotate(data)
    assert ambient.keep.all() and ambient.sigma_min.tolist() == [0.0] * 3 + [1.5] * 7
    assert OBJECTIVES.build(method.objective_spec()).buffer() == pytest.approx(2 / 3 ** 0.5)  # s_max = 4
    no_buffer = METHODS.build({"name": "ambient_o", "sigma_min": 1.5, "s_max": float("inf")})
    assert OBJECTIVES.build(no_buffer.objective_spec()).buffer() == 1.0


def test_methods_with_out_of_distribution_samples():
    data = pool(corrupted=torch.tensor([False, True, False, False]), ood=torch.tensor([False, False, True, True]))
    assert METHODS.build({"name": "clean_only"}).annotate(data).keep.tolist() == [True, False, False, False]
    assert METHODS.build({"name": "all_data"}).annotate(data).keep.all()
    unused = METHODS.build({"name": "ambient_o", "sigma_min": 1.0}).annotate(data)
    assert unused.keep.tolist() == [True, True, False, False]  # ood_sigma_max 0: OOD never admissible
    crops = METHODS.build({"name": "ambient_o", "sigma_min": 1.0, "ood_sigma_max": 0.2}).annotate(data)
    assert crops.keep.all() and crops.sigma_max.tolist() == [0, 0, pytest.approx(0.2), pytest.approx(0.2)]
    assert torch.isinf(crops.sigma_min[2:]).all() and crops.sigma_min[:2].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_contract(name, tmp_path):
    cls = METRICS.get(name)
    metric = cls(**cls.test_params)
    try:
        metric.check()
    except UserError as missing:  # pretrained weights are not on this machine (offline CI)
        pytest.skip(f"{name} needs files absent here: {missing}")
    reference = DATASETS.build({"name": "digits"}).load()
    metric.setup(reference, tmp_path)
    values = metric.compute(reference.images[:300], reference, tmp_path, tmp_path)
    assert values and all(np.isfinite(v) for v in values.values())
    assert metric.protocol()


def test_fd_digits_separates_blur_and_caches_reference(tmp_path):
    reference = DATASETS.build({"name": "digits"}).load()
    metric = METRICS.build({"name": "fd_digits", "epochs": 5})
    metric.setup(reference, tmp_path / "setup")
    (tmp_path / "cache").mkdir()
    blur = CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.0})
    blurred = (blur.apply(reference.images.float() / 255, []) * 255).round().to(torch.uint8)
    same = metric.compute(reference.images[:900], reference, tmp_path / "setup", tmp_path / "cache")["fd_digits"]
    worse = metric.compute(blurred[:900], reference, tmp_path / "setup", tmp_path / "cache")["fd_digits"]
    assert worse > 5 * same
    [entry] = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("features-*.json")]
    # one cached reference, keyed by the content hashes of data and weights
    assert entry["content_hash"] == reference.content_hash()
    assert entry["weights_sha256"] == features.file_sha256(tmp_path / "setup" / "classifier.pt")


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_objective_contract(name):
    from ambient_bench import TrainBatch

    cls = OBJECTIVES.get(name)
    objective = cls(**cls.test_params)
    g = torch.Generator().manual_seed(0)
    n = 6
    x0, z, eps = (torch.randn(n, 1, 4, 4, generator=g) for _ in range(3))
    sigma = torch.exp(torch.randn(n, generator=g, dtype=torch.float64))
    denoiser = lambda x, s, rows=None: 0.5 * x  # noqa: E731
    whole = {"mask": torch.ones(n, 1, 4, 4), "mask_tilde": torch.ones(n, 1, 4, 4)}  # nothing missing
    clean = objective.loss(denoiser, TrainBatch(x0, z, sigma, torch.zeros(n, dtype=torch.float64), eps, view=whole,
                                                teacher=denoiser))
    assert clean.shape == (n,) and torch.isfinite(clean).all() and (clean >= 0).all()
    if cls.edm_on_clean:  # on clean, whole samples (sigma_min 0, no pixel missing) it is EDM's loss
        edm = OBJECTIVES.build({"name": "edm"}).loss(denoiser, TrainBatch(x0, z, sigma, torch.zeros(n), eps))
        torch.testing.assert_close(clean, edm, rtol=1e-5, atol=1e-5)
    trusted_above = TrainBatch(x0, z, sigma, sigma / 2, eps, view=whole, teacher=denoiser)  # above annotations
    assert torch.isfinite(objective.loss(denoiser, trusted_above)).all()


def test_tweedie_uses_the_observation_and_ambient_adds_the_fixed_draw():
    from ambient_bench import TrainBatch

    g = torch.Generator().manual_seed(1)
    n = 4
    x0, z, eps = (torch.randn(n, 1, 2, 2, generator=g) for _ in range(3))
    sigma, sigma_min = torch.full((n,), 2.0, dtype=torch.float64), torch.full((n,), 1.0, dtype=torch.float64)
    seen = []
    denoiser = lambda x, s: seen.append(x) or x  # noqa: E731
    OBJECTIVES.build({"name": "ambient_tweedie"}).loss(denoiser, TrainBatch(x0, z, sigma, sigma_min, eps))
    OBJECTIVES.build({"name": "ambient"}).loss(denoiser, TrainBatch(x0, z, sigma, sigma_min, eps))
    torch.testing.assert_close(seen[0], x0 + 3 ** 0.5 * eps)           # x_t = x_tn + sqrt(4 - 1)·eps, x_tn = x0
    torch.testing.assert_close(seen[1], x0 + z + 3 ** 0.5 * eps)       # x_tn = x0 + sigma_min·Z
