"""A held-out reference beside the training one (Train FID / Test FID), and sample export."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ambient_bench import DATASETS, METRICS, fileio
from conftest import run_cli

pytestmark = pytest.mark.slow

SUITE = """
suite: heldout
defaults:
  dataset: {name: digits, resolution: 8, classes: [0, 1, 2, 3, 4]}
  mix: {clean_fraction: 0.2, corruption: {name: gaussian_blur, sigma: 0.6}}
  method: {name: ambient_o, sigma_min: 1.0}
  network: {model_channels: 8, label_dim: 5}   # class-conditional: sampling draws each sample's class
  train: {batch: 16, duration_kimg: 0.064, checkpoint_kimg: 0.032, lr: 2.0e-3, ema_halflife_kimg: 0.02}
  sample: {num: 40, steps: 3, export: npz}
  evaluate:
    metrics: [{name: fd_digits, epochs: 1}]
    heldout_reference: {name: digits, resolution: 8, classes: [5, 6, 7, 8, 9]}
"""


def test_heldout_reference_and_npz_export(tmp_path):
    suite, runs, results = tmp_path / "suite.yaml", tmp_path / "runs", tmp_path / "results"
    suite.write_text(SUITE)
    result = run_cli("run", str(suite), "--runs", str(runs), "--results", str(results))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_csv(results / "results.csv").set_index("quantity")
    samples = fileio.torch_load(next((runs / "sample").glob("*/samples.pt")))["images"]
    setup_dir = next((runs / "metric_setup").glob("*/classifier.pt")).parent
    metric = METRICS.build({"name": "fd_digits", "epochs": 1})
    for quantity, classes in (("fd_digits", [0, 1, 2, 3, 4]), ("fd_digits_heldout", [5, 6, 7, 8, 9])):
        reference = DATASETS.build({"name": "digits", "resolution": 8, "classes": classes}).load()
        # the same samples and feature network, against the training reference and the held-out one
        expected = metric.compute(samples, reference, setup_dir, tmp_path / "cache")["fd_digits"]
        assert rows.loc[quantity, "value"] == pytest.approx(expected, rel=1e-5)
    assert rows.loc["fd_digits", "value"] != rows.loc["fd_digits_heldout", "value"]
    exported = np.load(next((runs / "sample").glob("*/samples.npz")))["samples"]
    assert exported.shape == (40, 8, 8, 1) and exported.dtype == np.uint8
    missing = tmp_path / "missing.yaml"
    missing.write_text(SUITE.replace("heldout_reference: {name: digits, resolution: 8, classes: [5, 6, 7, 8, 9]}",
                                     "heldout_reference: {name: cifar10, split: test}"))
    plan = run_cli("plan", str(missing), "--runs", str(tmp_path / "runs2"),)
    assert plan.returncode == 2 and "cifar" in plan.stderr.lower() and len(plan.stderr.strip().splitlines()) == 1
