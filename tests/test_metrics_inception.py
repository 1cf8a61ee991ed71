"""Inception metrics (fid, kid, precision, recall) offline, and the offline fd_bandpass metric.

No real Inception weights exist on CI machines: these tests check the missing-weights error,
that a weights file placed where that error says is loaded (random weights: a loading check,
never an FID value), the reference-feature cache, and that fd_bandpass sees blur.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity

from ambient_bench.components import ImageSet
from ambient_bench.errors import UserError
from ambient_bench.metrics import features, inception, offline
from ambient_bench.registry import CORRUPTIONS, DATASETS, METRICS
from conftest import REPO, TINY_SUITE

WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def patches() -> torch.Tensor:
    return DATASETS.build({"name": "natural_patches", "resolution": 32, "count": 1024}).load().images


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    blur = CORRUPTIONS.build({"name": "gaussian_blur", "sigma": sigma})
    out = blur.apply(images.float() / 255, [np.random.default_rng(0)] * len(images))
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


def counting_extract(monkeypatch) -> list[int]:
    """Spy on features.extract: the number of images each call extracted."""
    calls: list[int] = []
    real = features.extract

    def spy(images, *args, **kwargs):
        calls.append(len(images))
        return real(images, *args, **kwargs)
    monkeypatch.setattr(features, "extract", spy)
    return calls


def test_missing_weights_one_line_names_file_url_and_folder(empty_torch_home):
    expected = empty_torch_home / "hub" / "checkpoints"
    for name in ("fid", "kid", "precision", "recall"):
        metric = METRICS.build({"name": name})
        with pytest.raises(UserError) as err:
            metric.check()
        message = str(err.value)
        assert "\n" not in message and f"metric '{name}'" in message
        assert str(expected / WEIGHTS) in message and inception.WEIGHTS_URL in message
        assert f"folder {expected}" in message and "TORCH_HOME" in message
    with pytest.raises(UserError, match=re.escape(str(empty_torch_home / "mine.pth"))):
        METRICS.build({"name": "fid", "weights": str(empty_torch_home / "mine.pth")}).check()
    # compute checks too, before any extraction
    ref = ImageSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(UserError, match=WEIGHTS):
        METRICS.build({"name": "fid"}).compute(ref.images, ref, empty_torch_home, empty_torch_home)


def test_flags_and_params():
    assert not METRICS.get("fid").higher_is_better and not METRICS.get("kid").higher_is_better
    assert METRICS.get("precision").higher_is_better and METRICS.get("recall").higher_is_better
    assert not METRICS.get("fd_bandpass").higher_is_better
    kid = METRICS.build({"name": "kid"})
    assert (kid.p.subsets, kid.p.subset_size) == (100, 1000)
    assert METRICS.build({"name": "precision"}).p.neighborhood == 3
    # device and batch leave stage keys alone; KID subsets do not; the weights enter as their content
    assert set(kid.spec()["params"]) == {"subsets", "subset_size"}
    assert set(kid.spec()["content"]) == {"weights_sha256"}


def test_score_functions_match_torch_fidelity(patches):
    """Our FD/KID/PRC on precomputed features equal calculate_metrics on the same extractor."""
    gen, real = patches[:300], patches[300:700]
    cpu = torch.device("cpu")
    f_gen = features.extract(gen, offline.EXTRACTOR, offline.LAYER, cpu, verbose=False)
    f_real = features.extract(real, offline.EXTRACTOR, offline.LAYER, cpu, verbose=False)
    ref = torch_fidelity.calculate_metrics(
        input1=features.TensorImages(gen), input2=features.TensorImages(real), fid=True, kid=True, prc=True,
        cuda=False, cache=False,
        feature_extractor=offline.EXTRACTOR, kid_subset_size=300, kid_subsets=20, save_cpu_ram=True, verbose=False)
    assert features.frechet_distance(f_gen, f_real) == pytest.approx(ref["frechet_inception_distance"], rel=1e-9)
    kid = METRICS.build({"name": "kid", "subsets": 20}).score(f_gen, f_real)  # subset_size 1000 → clamped to 300
    assert kid["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)
    assert kid["kid_std"] == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-6)
    assert METRICS.build({"name": "precision"}).score(f_gen, f_real) == {"precision": ref["precision"]}
    assert METRICS.build({"name": "recall"}).score(f_gen, f_real) == {"recall": ref["recall"]}


@pytest.fixture(scope="module")
def random_inception_state() -> dict[str, torch.Tensor]:
    """State dict of torch-fidelity's InceptionV3 with random init: no download, no loading."""
    from random_weights import random_inception_state as build

    return build()


def test_weights_placed_where_the_message_says_are_loaded(empty_torch_home, tmp_path, monkeypatch,
                                                          random_inception_state):
    """LOADING CHECK ONLY: random Inception weights collapse features (~1e-8), so the number is
    meaningless as FID; this checks the file is found, loaded, and the pipeline returns a number."""
    with pytest.raises(UserError) as err:
        METRICS.build({"name": "fid"}).check()
    path = Path(re.search(r"weights file not found: (\S+);", str(err.value)).group(1))
    path.parent.mkdir(parents=True)
    torch.save(random_inception_state, path)
    for name in ("fid", "precision", "recall"):
        METRICS.build({"name": name}).check()
    # kid end to end: fid's 2048×2048 eigvals alone take 3-8 s on this CPU, and kid also runs
    # the subset-size clamp (1000 → 2); fid's own formula is checked against torch-fidelity above
    metric = METRICS.build({"name": "kid", "device": "cpu", "batch": 4})
    # two images a side (the fewest with a covariance): Inception runs at ~3 img/s on a loaded 2-core CPU
    images = DATASETS.build({"name": "natural_patches", "resolution": 32, "count": 4}).load().images
    reference, samples = ImageSet(images[:2]), images[2:]
    calls = counting_extract(monkeypatch)
    cache = tmp_path / "refstats"
    values = metric.compute(samples, reference, tmp_path, cache)
    assert np.isfinite(values["kid"]) and np.isfinite(values["kid_std"]) and calls == [2, 2]
    # the reference entry is keyed by the weights' content (the cache hit itself: fd_bandpass test below)
    saved = [json.loads(p.read_text()) for p in cache.glob("features-*.json")]
    assert len(saved) == 1 and saved[0]["weights_sha256"] == features.file_sha256(path)
    assert saved[0]["shape"] == [2, 2048] and saved[0]["extractor"] == "inception-v3-compat"
    protocol = metric.protocol()
    assert features.file_sha256(path)[:12] in protocol["implementation"] and "2048" in protocol["feature_layer"]
    assert protocol["kid_subsets"] == 100 and protocol["kid_subset_size"].endswith("= 2")


def test_reference_cache_hit_and_content_key(tmp_path, monkeypatch, patches):
    metric = METRICS.build({"name": "fd_bandpass", "device": "cpu"})
    calls = counting_extract(monkeypatch)
    ref_a, ref_b, samples = ImageSet(patches[:200]), ImageSet(patches[200:400]), patches[400:500]
    first = metric.compute(samples, ref_a, tmp_path, tmp_path / "cache")
    files = sorted((tmp_path / "cache").glob("features-*.npy"))
    assert calls == [200, 100] and len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = metric.compute(samples, ref_a, tmp_path, tmp_path / "cache")
    assert calls == [200, 100, 100] and first == second  # hit: only the generated side extracted
    assert files[0].stat().st_mtime_ns == mtime
    metric.compute(samples, ref_b, tmp_path, tmp_path / "cache")  # different content, same count
    assert calls[-2:] == [200, 100] and len(list((tmp_path / "cache").glob("features-*.npy"))) == 2


def test_fd_bandpass_separates_blur_and_is_deterministic(tmp_path, patches):
    metric = METRICS.build({"name": "fd_bandpass", "device": "cpu"})
    reference, clean = ImageSet(patches[:512]), patches[512:]
    fd_clean = metric.compute(clean, reference, tmp_path, tmp_path / "c1")["fd_bandpass"]
    fd_blur1 = metric.compute(blurred(clean, 1.0), reference, tmp_path, tmp_path / "c1")["fd_bandpass"]
    fd_blur2 = metric.compute(blurred(clean, 2.0), reference, tmp_path, tmp_path / "c1")["fd_bandpass"]
    assert fd_clean < fd_blur1 < fd_blur2 and fd_blur1 > 2 * fd_clean
    # a fresh extractor and an empty cache give the very same number
    again = METRICS.build({"name": "fd_bandpass", "device": "cpu"}).compute(clean, reference, tmp_path,
                                                                           tmp_path / "c2")
    assert again["fd_bandpass"] == fd_clean
    protocol = " ".join(metric.protocol().values())
    assert "not FID" in protocol and "bandpass-rp64" in protocol
    assert "not FID" in METRICS.get("fd_bandpass").summary()


@pytest.mark.slow
def test_cli_plan_notes_missing_inception_weights_without_needing_them(tmp_path):
    """plan never needs weights (issue 28): offline with an empty TORCH_HOME it plans and names the file to fetch."""
    suite = tmp_path / "fid.yaml"
    suite.write_text(TINY_SUITE.format(results=tmp_path / "results")
                     .replace("[{name: fd_digits, epochs: 1}]", "[fid]"))
    assert "metrics: [fid]" in suite.read_text()
    home = tmp_path / "torch_home"
    home.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_HOME": str(home), "AMBIENT_BENCH_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "ambient_bench", "plan", str(suite), "--runs",
                           str(tmp_path / "runs")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "note: weights not in the cache yet: inception" in proc.stdout and "offline" in proc.stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
