"""End to end: classifier annotation (sigma_min) and crops annotation (sigma_max) in one suite."""
from __future__ import annotations

import json
import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

TINY = {"duration_kimg": 2, "batch": 32, "model_channels": 8}

SUITE = f"""
suite: issue4_tiny
results_dir: results
defaults:
  dataset: {{name: digits, resolution: 8, classes: [0, 1, 2, 3, 4]}}
  mix:
    clean_fraction: 0.2
    corruption: {{name: gaussian_blur, sigma: 1.0}}
    ood: [{{name: digits, resolution: 8, classes: [5, 6, 7, 8, 9]}}]
  method:
    name: ambient_o_crops
    annotate: classifier
    num_sigmas: 32
    trials: 1
    classifier: {json.dumps(TINY)}
    crop_sizes: [2, 4]
    crops_classifier: {json.dumps(TINY)}
  network: {{model_channels: 8, channel_mult: [1], num_blocks: 1}}
  train: {{batch: 32, duration_kimg: 0.2}}
  sample: {{num: 32, steps: 4, batch: 32}}
  evaluate:
    metrics: [{{name: fd_digits, epochs: 1}}]
"""


def test_clean_target_plus_corrupted_plus_ood_annotated_by_both_classifiers(write_suite, tmp_path):
    suite = write_suite(SUITE)
    runs = tmp_path / "runs"
    plan = run_cli("plan", str(suite), "--runs", str(runs))
    assert plan.returncode == 0, plan.stderr
    assert "noise classifier on the balanced pool (a 50% clean coin), class-balanced loss" in plan.stdout
    assert "crops classifier 2×2 on target vs out-of-distribution images" in plan.stdout
    assert "crops classifier 4×4" in plan.stdout
    assert "50% clean" in plan.stdout  # the balanced pool the noise classifier learns from

    run = run_cli("run", str(suite), "--runs", str(runs), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    annotate_dir = next((runs / "annotate").iterdir())
    summary = json.loads((annotate_dir / "summary.json").read_text())
    assert summary["annotate"] == "classifier" and summary["crop_sizes"] == [2, 4]
    assert summary["num_ood"] > 0 and summary["sigma_max_mean"] > 0
    assert {"classifier_curves.png", "usable_samples.png", "patch_probabilities_crop2.png",
            "patch_probabilities_crop4.png"} <= set(summary["figures"])
    header, *rows = (annotate_dir / "annotations.csv").read_text().splitlines()
    columns = header.split(",")
    assert {"sigma_min", "sigma_max", "p_lowest_sigma", "p_target_crop2", "p_target_crop4"} <= set(columns)
    table = [dict(zip(columns, r.split(","))) for r in rows]
    ood = [r for r in table if r["ood"] == "1"]
    low = [r for r in table if r["corrupted"] == "1" and r["ood"] == "0"]
    assert all(float(r["sigma_max"]) in (0.01, 0.2, 0.55) for r in ood)  # the 64 px table scaled to 8 px
    assert all(r["sigma_min"] == "inf" for r in ood)
    assert all(float(r["sigma_min"]) > 0 for r in low)
    figures = (tmp_path / "results" / "figures.md").read_text()
    assert "classifier_curves.png" in figures and "usable_samples.png" in figures
    assert (tmp_path / "results" / "figures" / f"annotate-{annotate_dir.name[:16]}" / "usable_samples.png").is_file()

    stale = tmp_path / "results" / "figures" / "annotate-0000000000000000"  # an annotation the suite lost
    stale.mkdir()
    again = run_cli("run", str(suite), "--runs", str(runs), cwd=tmp_path)
    assert again.returncode == 0 and "0 to run" in again.stdout
    assert not stale.exists()


def test_classifier_annotation_rejects_a_fixed_sigma(write_suite, tmp_path):
    suite = write_suite(SUITE.replace("annotate: classifier", "annotate: classifier\n    sigma_min: 1.0"))
    result = run_cli("plan", str(suite), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert "suite.yaml:12:" in result.stderr  # the sigma_min line
    assert "does not read sigma_min with annotate: classifier" in result.stderr and "remove it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_quality_annotation_without_clip_weights_is_a_plan_note_and_stops_run(write_suite, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # piq looks for its CLIP files under $HOME/.cache/clip
    text = SUITE.replace("name: ambient_o_crops\n    annotate: classifier",
                         "name: ambient_o\n    annotate: quality\n    sigma_min: 1.0")
    # the classifier's settings go too: a quality annotation does not read them (setting them is an error)
    suite = write_suite(text.replace("    crop_sizes: [2, 4]\n", "")
                        .replace(f"    crops_classifier: {json.dumps(TINY)}\n", "")
                        .replace("    num_sigmas: 32\n    trials: 1\n", "")
                        .replace(f"    classifier: {json.dumps(TINY)}\n", ""))
    # plan never needs weights (issue 28): it names the files a stage would fetch
    result = run_cli("plan", str(suite), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weights not in the cache yet: clip_rn50, clip_iqa_tokens" in result.stdout
    # run fetches them first; offline (the tests' default) that is one line before anything is written
    result = run_cli("run", str(suite), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "RN50.pt" in result.stderr and "https://" in result.stderr and ".cache/clip" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written
