"""Intervals and paired tests (issue 19): they find a real difference and rarely invent one."""
from __future__ import annotations

import numpy as np
import pytest

from ambient_bench.results.stats import frechet, frechet_bootstrap, paired_test, significant_best, t_interval


def draws(rng, n, difference, seed_sd=3.0, noise_sd=1.0):
    """Two methods on the same n seeds: a seed effect both share (large) plus their own noise."""
    seed_effect = rng.normal(0, seed_sd, n)
    return seed_effect + rng.normal(0, noise_sd, n), seed_effect + difference + rng.normal(0, noise_sd, n)


def test_the_paired_test_finds_a_known_difference_at_the_stated_sample_size():
    rng = np.random.default_rng(0)
    found = [paired_test(*draws(rng, 10, 2.0)).p_value < 0.05 for _ in range(200)]
    assert np.mean(found) > 0.9  # a difference of 2 noise sds (d_z ≈ 1.4), 10 seeds: measured power 0.985
    # unpaired, the shared seed effect (sd 3) would hide it: pairing is what makes 10 seeds enough


def test_a_zero_difference_is_rejected_near_the_nominal_rate():
    rng = np.random.default_rng(1)
    rejected = [paired_test(*draws(rng, 10, 0.0)).p_value < 0.05 for _ in range(600)]
    assert 0.02 <= np.mean(rejected) <= 0.08  # nominal 5% (exact permutation: at most 5%)


def test_effect_size_and_two_seeds_cannot_reject():
    result = paired_test([1.0, 2.0, 3.0], [0.0, 1.5, 2.0])
    assert result.mean_difference == pytest.approx(0.8333, abs=1e-4) and result.effect_size > 0
    assert paired_test([1.0, 2.0], [5.0, 6.0]).p_value == 0.5  # 2 pairs: 4 sign patterns, p ≥ 1/2


def test_t_interval_covers_the_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = []
    for _ in range(2000):
        low, high = t_interval(rng.normal(5.0, 2.0, 3))
        covered.append(low <= 5.0 <= high)
    assert 0.93 <= np.mean(covered) <= 0.97
    assert t_interval([1.0]) is None


def test_bold_only_what_the_seeds_support():
    clear = {"a": {0: 10.0, 1: 11.0, 2: 10.5, 3: 10.2, 4: 10.8, 5: 10.1},
             "b": {0: 20.0, 1: 21.0, 2: 20.5, 3: 20.2, 4: 20.8, 5: 20.1}}
    assert significant_best(clear, lower_is_better=True) == {"a"}
    tie = {"a": {0: 10.0, 1: 11.0}, "b": {0: 10.5, 1: 10.9}}
    assert significant_best(tie, lower_is_better=True) == {"a", "b"}  # two seeds: nothing rejects
    assert significant_best({"a": {0: 1.0}, "b": {0: 2.0}}, lower_is_better=True) == set()  # one seed: no test


def test_the_frechet_bootstrap_brackets_the_score_and_narrows_with_more_samples():
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, (4000, 4))
    mu, sigma = ref.mean(0), np.cov(ref, rowvar=False)
    widths = []
    for n in (200, 3200):
        gen = rng.normal(0.3, 1, (n, 4))
        low, high = frechet_bootstrap(gen, mu, sigma, resamples=100)
        value = frechet(gen.mean(0), np.cov(gen, rowvar=False), mu, sigma)
        assert low <= value <= high * 1.05
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_fd_digits_bootstrap_interval_reaches_the_table(tmp_path):
    """metric fd_digits with bootstrap: the value and a bracketing interval; a one-seed table cell shows it."""
    import pandas as pd
    import torch

    from ambient_bench.registry import DATASETS, METRICS
    from ambient_bench.results.render import render
    from ambient_bench.results.tables import load_spec
    from conftest import REPO

    reference = DATASETS.build({"name": "digits", "resolution": 8}).load()
    metric = METRICS.build({"name": "fd_digits", "epochs": 1, "bootstrap": 50})
    metric.setup(reference, tmp_path)
    noisy = (reference.images[:300].float() + 40 * torch.randn(300, 1, 8, 8)).clamp(0, 255).to(torch.uint8)
    values = metric.compute(noisy, reference, tmp_path, tmp_path)
    assert values["fd_digits_boot_low"] <= values["fd_digits"] <= values["fd_digits_boot_high"] * 1.05
    assert "50 resamples" in metric.protocol()["implementation"]
    rows = [{"suite": "t", "cell": "c", "dataset.name": "digits", "method.name": "clean_only", "train.seed": 0,
             "mix.corruption.sigma": 0.6, "quantity": q, "value": v, "dataset": "digits", "dataset_hash": "ab" * 8,
             "clean_fraction": 0.1, "num_samples": 300, "sampler": "s", "checkpoint": "c",
             "feature_extractor": "cnn", "implementation": metric.protocol()["implementation"]}
            for q, v in values.items()]
    md = render(pd.DataFrame(rows), load_spec(REPO / "benchmarks" / "tables" / "table2a.yaml"))["md"]
    low, high = values["fd_digits_boot_low"], values["fd_digits_boot_high"]
    assert f"{values['fd_digits']:.1f} [{low:.1f}, {high:.1f}]" in md and "bootstrap interval" in md


def test_the_report_lists_paired_comparisons_with_each_columns_best():
    from test_tables import SPEC, frame

    from ambient_bench.results.report import paired_comparisons
    from ambient_bench.results.tables import load_spec

    six = paired_comparisons(frame(seeds=[(k, 0.5 * k) for k in range(6)]), load_spec(SPEC))
    assert "<td>Only clean</td>" in six and "<td>Ambient-o (fixed σ_min)</td>" in six  # row vs the best
    assert "0.031" in six  # 6 seeds, every difference the same sign: p = 2/2^6
    assert paired_comparisons(frame(seeds=[(0, 0.0)]), load_spec(SPEC)) == ""  # one seed: nothing to pair
