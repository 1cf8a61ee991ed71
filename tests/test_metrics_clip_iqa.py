"""The clip_iqa metric (paper Table 5): per-sample scores, win-rates and the Table 5 layout."""
from __future__ import annotations

import math
import textwrap
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ambient_bench import UserError
from ambient_bench.components import Metric
from ambient_bench.engine.stages import PER_SAMPLE, _save_per_sample
from ambient_bench.registry import DATASETS, METRICS
from ambient_bench.results.collect import _win_rate_rows, win_rate
from ambient_bench.results.render import render
from ambient_bench.results.tables import load_spec

from conftest import REPO, run_cli

TABLES = REPO / "benchmarks" / "tables"
# The reference entry handed over for benchmarks/reference/ambient_omni_paper.yaml (same text).
@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return DATASETS.build({"name": "natural_patches", "resolution": 32, "count": 12}).load().images


# --- win-rate -------------------------------------------------------------------------------

def test_win_rate_on_toy_arrays():
    a, b = np.array([3.0, 2.0, 5.0, 1.0]), np.array([1.0, 1.0, 4.0, 0.5])
    assert win_rate(a, b) == 1.0 and win_rate(b, a) == 0.0
    assert win_rate(a, a) == 0.5                                   # ties count half
    mixed_a, mixed_b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 2.0, 5.0, 4.0])
    assert win_rate(mixed_a, mixed_b) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert win_rate(np.array([3.0, 2.0, 1.0]), np.ones(3)) == pytest.approx(2.5 / 3)
    assert win_rate(a, b) + win_rate(b, a) == 1.0                  # the two rows of a pair add up to 1
    assert win_rate(a, b, higher_is_better=False) == 0.0           # lower-is-better scores flip
    assert win_rate(np.array([1.0, np.nan]), np.array([0.0, 5.0])) == 1.0  # NaN pairs left out
    with pytest.raises(ValueError, match="equal length"):
        win_rate(a, b[:3])


def test_win_rate_rows_pair_methods_within_a_seed(tmp_path):
    """Cells that differ only in the method are compared; other seeds are other groups."""
    metric = {"name": "clip_iqa", "scorer": "laplacian_sharpness"}
    scored, scores = [], {
        ("all_data", 0): [1.0, 1.0, 1.0, 1.0], ("ambient_o", 0): [2.0, 2.0, 0.0, 1.0],
        ("all_data", 1): [0.0, 0.0, 0.0, 0.0], ("ambient_o", 1): [1.0, 1.0, 1.0, 1.0],
        ("ambient_o", 2): [1.0, 1.0, 1.0, 1.0]}  # alone in its group (seed 2): no win-rate
    for (method, seed), values in scores.items():
        key = f"{method}-{seed}"
        (tmp_path / "evaluate" / key).mkdir(parents=True)
        np.savez(tmp_path / "evaluate" / key / PER_SAMPLE, laplacian_sharpness=np.array(values))
        base = {"suite": "t", "cell": key, "method.name": method, "method.sigma_min": 1.0 if method != "all_data"
                else None, "train.seed": seed}
        summary = {"per_sample": ["laplacian_sharpness"], "protocol": {"feature_extractor": "sharpness"}}
        scored.append((base, {"num_samples": 4}, metric, SimpleNamespace(key=key), summary))
    store = SimpleNamespace(dir=lambda kind, key: tmp_path / kind / key)
    rows = _win_rate_rows(scored, store)
    got = {(r["method.name"], r["train.seed"]): r["value"] for r in rows}
    assert got == {("all_data", 0): 0.375, ("ambient_o", 0): 0.625, ("all_data", 1): 0.0, ("ambient_o", 1): 1.0}
    assert {r["quantity"] for r in rows} == {"laplacian_sharpness_win_rate"}
    assert all("win-rate: fraction of sample seeds" in r["feature_extractor"] for r in rows)


# --- the metric -----------------------------------------------------------------------------

def test_offline_scorer_gives_mean_median_and_per_sample_scores(photos, tmp_path):
    metric = METRICS.build({"name": "clip_iqa", "scorer": "laplacian_sharpness", "batch": 5})
    assert metric.higher_is_better and isinstance(metric, Metric)
    metric.check()  # no weights needed
    values = metric.compute(photos, None, tmp_path, tmp_path)
    per_sample = metric.per_sample()
    scores = per_sample["laplacian_sharpness"]
    assert scores.shape == (12,) and scores.dtype == np.float64
    assert values == {"laplacian_sharpness_mean": pytest.approx(scores.mean()),
                      "laplacian_sharpness_median": pytest.approx(np.median(scores))}
    protocol = metric.protocol()
    assert "not CLIP-IQA" in protocol["feature_extractor"] and protocol["resolution"].startswith("as generated")
    # the evaluate stage keeps the per-sample scores beside metrics.json, sample i at index i
    assert _save_per_sample(metric, len(photos), tmp_path) == ["laplacian_sharpness"]
    np.testing.assert_array_equal(np.load(tmp_path / PER_SAMPLE)["laplacian_sharpness"], scores)
    # batch size does not enter stage keys: it cannot change the numbers
    other = METRICS.build({"name": "clip_iqa", "scorer": "laplacian_sharpness", "batch": 64})
    assert other.spec() == metric.spec()


def test_save_per_sample_ignores_metrics_without_and_checks_shapes(tmp_path):
    fd = METRICS.build({"name": "fd_digits"})
    assert _save_per_sample(fd, 10, tmp_path) == [] and not (tmp_path / PER_SAMPLE).exists()
    bad = SimpleNamespace(name="x", per_sample=lambda: {"s": np.zeros(3)})
    with pytest.raises(ValueError, match=r"one score per sample \(10,\)"):
        _save_per_sample(bad, 10, tmp_path)


def test_check_without_clip_weights_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("piq")
    monkeypatch.setenv("HOME", str(tmp_path))  # piq reads ~/.cache/clip
    metric = METRICS.build({"name": "clip_iqa"})  # the default scorer: piq, the paper's
    with pytest.raises(UserError) as err:
        metric.check()
    message = str(err.value)
    assert "\n" not in message and message.startswith("clip_iqa: weights not found offline")
    assert "RN50.pt" in message and str(tmp_path / ".cache" / "clip") in message


def test_piq_scorer_with_placed_files(tmp_path, monkeypatch, photos):
    piq = pytest.importorskip("piq")
    from test_quality import write_tiny_clip

    monkeypatch.setenv("HOME", str(tmp_path))
    write_tiny_clip(tmp_path / ".cache" / "clip")
    metric = METRICS.build({"name": "clip_iqa"})
    metric.check()
    values = metric.compute(photos[:4], None, tmp_path, tmp_path)
    assert set(values) == {"clip_iqa_mean", "clip_iqa_median"} and 0 < values["clip_iqa_mean"] < 1
    protocol = metric.protocol()
    assert protocol["implementation"] == f"piq {piq.__version__}"
    assert protocol["prompts"] == ["Good photo.", "Bad photo."] and protocol["data_range"] == 1.0


# --- Table 5 --------------------------------------------------------------------------------

def table5_frame(prefix: str) -> pd.DataFrame:
    protocol = dict(dataset="natural_patches(resolution=32)", dataset_hash="abcdef0123456789", clean_fraction=0.1,
                    num_samples=256, sampler="EDM Heun, 8 steps (15 NFE)", checkpoint="final EMA",
                    implementation="piq 0.8.0")
    data = []
    for method, (mean, median, rate) in {"all_data": (0.60, 0.62, 0.4), "ambient_o": (0.65, 0.70, 0.6)}.items():
        base = {"suite": "t", "cell": method, "dataset.name": "natural_patches", "mix.clean_fraction": 0.1,
                "method.name": method, "train.seed": 0, **protocol}
        for quantity, value in (("mean", mean), ("median", median), ("win_rate", rate)):
            data.append({**base, "quantity": f"{prefix}_{quantity}", "value": value,
                         "feature_extractor": "CLIP-IQA" + ("; win-rate: rule" if quantity == "win_rate" else "")})
    return pd.DataFrame(data)


def test_table5_renders_with_the_papers_numbers():
    md = render(table5_frame("clip_iqa"), load_spec(TABLES / "table5.yaml"))["md"]
    ours, paper = md.split("## The paper's numbers")
    lines = {line.split("|")[1].strip(): line for line in ours.splitlines() if line.startswith("| ")}
    assert "CLIP-IQA (piq) · Average ↑" in ours and "Win-rate ↑" in ours
    assert "0.650" in lines["Ambient-o"] and "60.00%" in lines["Ambient-o"]
    assert "**" not in ours.split("\n- ")[0]  # one seed: no paired test, nothing claimed in bold
    assert "40.00%" in lines["All data (the EDM-2 baseline)"]
    assert "win-rate: rule" in ours                          # the rule comes with the rows' protocol
    assert "not-run" in paper and "47.98%" in paper and "**52.02%**" in paper
    assert "Average CLIP IQA score" in paper and "Ambient-o XXL + crops" in paper


def test_sharpness_table_is_labelled_as_sharpness():
    md = render(table5_frame("laplacian_sharpness"), load_spec(TABLES / "table5_sharpness.yaml"))["md"]
    assert "Laplacian sharpness (not CLIP-IQA) · Average ↑" in md and "CLIP-IQA (piq)" not in md
    # clip_iqa quantities never land in the sharpness table, nor the reverse
    assert "–" in render(table5_frame("clip_iqa"), load_spec(TABLES / "table5_sharpness.yaml"))["md"]


@pytest.mark.slow
def test_cli_run_writes_win_rates_and_table(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(f"""
        suite: table5_tiny
        results_dir: {tmp_path / "results"}
        defaults:
          dataset: {{name: digits, resolution: 16}}
          mix: {{clean_fraction: 0.1, corruption: {{name: gaussian_blur, sigma: 1.0}}}}
          method: all_data
          network: {{model_channels: 8, channel_mult: [1, 2], num_blocks: 1}}
          train: {{batch: 32, duration_kimg: 0.25, checkpoint_kimg: 0.25}}
          sample: {{num: 32, steps: 4}}
          evaluate:
            metrics: [{{name: clip_iqa, scorer: laplacian_sharpness}}]
        grid:
          method: [all_data, {{name: ambient_o, sigma_min: 1.0}}]
        tables: [{TABLES / "table5_sharpness.yaml"}]
        """).lstrip())
    proc = run_cli("run", str(suite), "--runs", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    df = pd.read_csv(tmp_path / "results" / "results.csv")
    rates = df[df["quantity"] == "laplacian_sharpness_win_rate"].set_index("method.name")["value"]
    assert sorted(rates.index) == ["all_data", "ambient_o"] and rates.sum() == pytest.approx(1.0)
    assert not math.isnan(rates["ambient_o"])
    assert len(list((tmp_path / "runs").glob(f"evaluate/*/{PER_SAMPLE}"))) == 2
    md = (tmp_path / "results" / "table5_sharpness.md").read_text()
    assert "Laplacian sharpness (not CLIP-IQA) · Win-rate ↑" in md and "%" in md
