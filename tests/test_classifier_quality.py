"""Classifiers that hold on real data: calibrated to any class ratio, measured on held-out images,
and gated, so that Ambient-o never silently becomes the clean-only model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ambient_bench import UserError
from ambient_bench.annotation import classifier_quality
from ambient_bench.annotation.classifier_net import build_classifier, parameter_count
from ambient_bench.annotation.classifier_training import CLASSIFIER_SECTION, load_classifier, train_classifier
from ambient_bench.annotation.sigma_min import annotate_sigma_min
from ambient_bench.components import AnnotationContext, MixedData
from ambient_bench.data.images import uint8_to_model
from ambient_bench.data.mixing import mix
from ambient_bench.fileio import torch_save
from ambient_bench.registry import CORRUPTIONS, DATASETS, METHODS
from conftest import run_cli


class Brightness(torch.nn.Module):
    """logit = 40 · mean pixel: brighter images are 'positive', less and less visibly as noise grows."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, augment_labels=None) -> torch.Tensor:
        return 40 * x.mean(dim=(1, 2, 3))


def test_holdout_is_a_fixed_coin_per_pool_index():
    indices = torch.arange(2000)
    held = classifier_quality.holdout_mask(indices, 0.1, seed=0)
    assert 150 < int(held.sum()) < 250
    # an image's fate does not depend on which other images are in the pool, or their order
    assert torch.equal(classifier_quality.holdout_mask(indices.flip(0), 0.1, 0), held.flip(0))
    assert not torch.equal(classifier_quality.holdout_mask(indices, 0.1, 1), held)


def test_measure_sees_separation_fade_with_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2 == 0
    images = torch.randn(200, 1, 8, 8, generator=g) * 0.2 + labels.float().reshape(-1, 1, 1, 1) * 0.3 - 0.15
    quality = classifier_quality.measure(Brightness(), images, labels, -1.2, 1.2, seed=0)
    auc = quality["auc"]
    assert len(auc) == classifier_quality.LEVELS and quality["auc_low"] > 0.95
    assert auc[-1] < 0.75 < auc[0]  # at σ ≈ 10 the brightness difference is buried in the noise
    assert quality["holdout_images"] == 200 and quality["holdout_positive"] == 100
    classifier_quality.check(quality, 0.6, "noise classifier")  # passes
    with pytest.raises(UserError) as err:
        classifier_quality.check({**quality, "auc_low": 0.52}, 0.6, "noise classifier on the pool")
    message = str(err.value)
    assert "\n" not in message and "ROC-AUC 0.52" in message and "classifier.duration_kimg" in message


def test_an_annotation_that_drops_every_low_quality_image_fails_unless_allowed(tmp_path):
    """A classifier sure of 'corrupted' at every noise level: no image crosses the threshold."""
    cfg = CLASSIFIER_SECTION.resolve({"model_channels": 8}, ())
    net = build_classifier(cfg, 1, 8)
    torch.nn.init.zeros_(net.net.head.weight)
    torch.nn.init.constant_(net.net.head.bias, 20.0)
    torch_save(tmp_path / "classifier.pt", {"ema": net.state_dict(), "network_cfg": cfg, "img_channels": 1,
                                            "resolution": 8, "sigma_data": 0.5, "crop_size": None,
                                            "parameters": parameter_count(net)})
    n = 20
    data = MixedData(images=torch.zeros(n, 1, 8, 8, dtype=torch.uint8), corrupted=torch.arange(n) >= 2,
                     ood=torch.zeros(n, dtype=torch.bool), noise=torch.zeros(n, 1, 8, 8), index=torch.arange(n),
                     corruption=torch.zeros(n, dtype=torch.int8))
    ctx = AnnotationContext(workdir=tmp_path, classifiers={"noise": tmp_path / "classifier.pt"})
    spec = {"name": "ambient_o", "annotate": "classifier", "num_sigmas": 16, "trials": 1}
    with pytest.raises(UserError) as err:
        METHODS.build(spec).annotate(data, ctx)
    assert "drops 18 of 18 low-quality images" in str(err.value) and "max_dropped_fraction" in str(err.value)
    allowed = METHODS.build({**spec, "max_dropped_fraction": 1.0}).annotate(data, ctx)
    assert allowed.keep.tolist() == [True, True] + [False] * 18


def test_footnote_counts_what_the_annotation_dropped():
    from ambient_bench.results.render import render
    from ambient_bench.results.tables import load_spec
    from conftest import REPO

    base = {"suite": "t", "dataset.name": "digits", "method.name": "ambient_o", "mix.corruption.sigma": 0.6,
            "train.seed": 0, "dataset": "digits", "dataset_hash": "0" * 16, "clean_fraction": 0.1,
            "num_samples": 10, "sampler": "Heun", "checkpoint": "final",
            "classifier": "noise classifier on the balanced pool: 1,000 training images, 50% low quality; "
                          "held-out ROC-AUC 0.93 at σ ≤ 0.11", "low_quality_dropped": "1,800 of 1,800"}
    df = pd.DataFrame([{**base, "cell": "a", "quantity": "fd_digits", "value": 1.0},
                       {**base, "cell": "a", "quantity": "sigma_min_mean", "value": float("nan")}])
    md = render(df, load_spec(REPO / "benchmarks" / "tables" / "table2a.yaml"))["md"]
    assert "Low-quality images the annotation dropped (trusted at no noise level): " \
           "Ambient-o (fixed σ_min) (σ_B = 0.6): 1,800 of 1,800" in md
    assert "held-out ROC-AUC 0.93" in md


@pytest.mark.slow
def test_a_10_90_and_a_50_50_pool_of_the_same_images_annotate_alike(tmp_path):
    """The class-balanced loss: the classifier's output is the posterior under equal priors, so the
    share of bad images in its pool does not move the threshold. The same digits split by the
    harness's coin into a 50/50 and a 10/90 pool; the images corrupted in both are annotated by
    each classifier. Without the balance (the release's plain BCE) the 10/90 classifier learns the
    base rate, and almost no image ever falls below P(corrupted) 0.55."""
    data = DATASETS.build({"name": "digits", "resolution": 8}).load()
    blur = CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.0})
    pools = {fraction: mix(data, fraction, [blur], seed=0) for fraction in (0.5, 0.1)}
    both = pools[0.5].corrupted  # the coin is nested: corrupted at 50% clean ⇒ corrupted at 10% clean
    images, indices = uint8_to_model(pools[0.5].images[both]), pools[0.5].index[both]
    cfg = CLASSIFIER_SECTION.resolve({"batch": 64, "duration_kimg": 20, "lr": 2e-3, "log_every": 10_000,
                                      "checkpoint_kimg": 1000, "model_channels": 8}, ())

    def sigma_min(fraction: float, balanced: bool = True) -> np.ndarray:
        out = tmp_path / f"{fraction}-{balanced}"
        assert train_classifier(pools[fraction].images, pools[fraction].corrupted, cfg, cfg, out,
                                log=lambda s: None, class_balanced=balanced)
        return annotate_sigma_min(load_classifier(out / "classifier.pt"), images, indices, num_sigmas=128,
                                  trials=2).sigma_min

    balanced, unbalanced = sigma_min(0.5), sigma_min(0.1)
    assert np.isfinite(balanced).mean() > 0.9 and np.isfinite(unbalanced).mean() > 0.9
    medians = np.median(balanced), np.median(unbalanced)
    # the 10/90 classifier learns from 5× fewer clean images, so its threshold is noisier: measured 1.17 vs
    # 1.42 (torch 2.14.1, numpy 2.4.6; within 10% in the environment this test was written in). The failure
    # guarded against is of another size: plain BCE leaves over 80% of the images unannotated (below)
    assert abs(medians[1] - medians[0]) <= 0.3 * medians[0], medians
    plain = sigma_min(0.1, balanced=False)
    assert np.isfinite(plain).mean() < 0.2  # the failure the balance removes


@pytest.mark.slow
def test_indistinguishable_good_and_bad_images_fail_the_classifier_stage(write_suite, tmp_path):
    suite = write_suite(f"""
suite: same_images
results_dir: {tmp_path / "results"}
defaults:
  dataset: {{name: digits, resolution: 8}}
  mix: {{clean_fraction: 0.5, corruption: {{name: gaussian_blur, sigma: 0.0}}}}
  method: {{name: ambient_o, annotate: classifier, num_sigmas: 16, trials: 1,
           classifier: {{duration_kimg: 4, batch: 64, model_channels: 8}}}}
  network: {{model_channels: 8, channel_mult: [1], num_blocks: 1}}
  train: {{batch: 32, duration_kimg: 0.1}}
  sample: {{num: 16, steps: 4}}
  evaluate: {{metrics: [{{name: fd_digits, epochs: 1}}]}}
""")
    runs = tmp_path / "runs"
    result = run_cli("run", str(suite), "--runs", str(runs))
    # a failed stage: the stages that do not read it still run, then a summary and exit 1
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    summary = result.stdout[result.stdout.index("1 stages failed"):].splitlines()
    assert len(summary) == 2 and summary[1].startswith("  classifier ")
    assert "held-out ROC-AUC" in summary[1] and "min_auc 0.6" in summary[1]
    assert "cannot tell the low-quality images from the clean ones" in summary[1]
    status = json.loads(next((runs / "classifier").iterdir()).joinpath("status.json").read_text())
    assert status["state"] == "failed"
    assert not (runs / "train").exists() and not (tmp_path / "results").exists()
    # the measurement is kept beside the failed stage, to look at
    quality = json.loads(next((runs / "classifier").iterdir()).joinpath("quality.json").read_text())
    assert quality["auc_low"] < 0.6 and Path(next((runs / "classifier").iterdir()), "classifier_quality.png").is_file()


def test_plain_bce_and_the_whole_pool(write_suite, tmp_path, monkeypatch):
    """classifier.class_balance false trains on the plain BCE (every sample weighs 1: the loss the optimiser
    sees is the unweighted mean), and holdout_fraction 0 trains on every image of the pool, the quality
    then measured in-sample (App. D's unbalanced classifier; the paper's classifiers see their whole pool)."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from ambient_bench.annotation import classifier_training
    from ambient_bench.cli import main

    seen = []

    def spy(logits, target, weight=None):
        seen.append((weight.detach().clone(), F.binary_cross_entropy_with_logits(logits, target).detach()))
        return F.binary_cross_entropy_with_logits(logits, target, weight=weight)

    monkeypatch.setattr(classifier_training, "F", SimpleNamespace(binary_cross_entropy_with_logits=spy))
    suite = write_suite(f"""
suite: plain_bce
results_dir: {tmp_path / "results"}
defaults:
  dataset: {{name: digits, resolution: 8}}
  mix: {{clean_fraction: 0.25, corruption: {{name: gaussian_blur, sigma: 1.0}}}}
  method: {{name: ambient_o, annotate: classifier, classifier_pool: diffusion, num_sigmas: 16, trials: 1,
           max_dropped_fraction: 1.0,
           classifier: {{duration_kimg: 0.256, batch: 64, model_channels: 8, min_auc: 0, class_balance: false,
                        holdout_fraction: 0}}}}
  network: {{model_channels: 8, channel_mult: [1], num_blocks: 1}}
  train: {{batch: 32, duration_kimg: 0.064}}
  sample: {{num: 8, steps: 2}}
  evaluate: {{metrics: [{{name: fd_digits, epochs: 1}}]}}
""")
    runs = tmp_path / "runs"
    assert main(["run", str(suite), "--runs", str(runs)]) == 0
    assert len(seen) == 4  # 256 images in batches of 64
    for weight, _ in seen:
        assert torch.equal(weight, torch.ones_like(weight))
    summary = json.loads(next((runs / "classifier").iterdir()).joinpath("summary.json").read_text())
    mix_summary = json.loads(next((runs / "mix").iterdir()).joinpath("summary.json").read_text())
    assert summary["objective"] == "plain BCE"
    assert summary["num_images"] == mix_summary["num_images"]  # every image of the pool, none held out
    assert summary["quality"]["in_sample"] and 0 < summary["quality"]["holdout_images"] < summary["num_images"]
    # the balanced loss on the same pool weighs its classes 0.5/prior and 0.5/(1 - prior): not ones
    prior = summary["prior"]
    assert 0.6 < prior < 0.9 and abs(0.5 / prior - 1) > 0.1
