"""Pieces of the data-value study (issue 20): a clean-count axis and memorisation against the training set."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli

SUITE = """
suite: dv
defaults:
  dataset: {{name: digits, resolution: 16}}
  mix: {{clean_fraction: 0.5, corruption: [{{name: gaussian_blur, sigma: 1.0}}, {{name: jpeg, quality: 15}}]}}
  method: clean_only
  network: {{model_channels: 8, channel_mult: [1, 2], num_blocks: 1}}
  train: {{batch: 32, duration_kimg: 0.064, checkpoint_kimg: 0.064}}
  sample: {{num: 16, steps: 3, batch: 16}}
  evaluate: {{metrics: [{{name: fd_digits, epochs: 1}}, {{name: memorization, features: pixels-avgpool8}}],
             against_training: [{against}]}}
grid:
  mix.max_clean: [10, 40]
"""


def test_against_training_reads_the_cells_clean_pool(tmp_path):
    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.runner import build_graph

    path = tmp_path / "dv.yaml"
    path.write_text(SUITE.format(against="memorization"))
    graph = build_graph(load_suite(path))
    for stages in graph.cells:
        memo, fd = stages["evaluate:memorization"], stages["evaluate:fd_digits"]
        assert memo.deps["mix"] is stages["mix"] and "mix" not in fd.deps  # FD stays against the whole dataset
    path.write_text(SUITE.format(against="fid"))
    result = run_cli("plan", str(path))
    assert result.returncode == 2 and "against_training: 'fid' is not one of the cell's metrics" in result.stderr


@pytest.mark.slow
def test_memorisation_is_measured_against_the_clean_images_trained_on(tmp_path):
    path = tmp_path / "dv.yaml"
    path.write_text(SUITE.format(against="memorization"))
    result = run_cli("run", str(path), "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res"))
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [json.loads((p.parent / "summary.json").read_text())
                 for p in (tmp_path / "runs" / "evaluate").glob("*/stage.json")
                 if json.loads(p.read_text())["reads"].get("reference") == "training"]
    assert len(summaries) == 2 and len({s["reference_hash"] for s in summaries}) == 2  # 10 vs 40 clean images
