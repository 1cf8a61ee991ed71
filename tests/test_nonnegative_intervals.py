"""Intervals of quantities that cannot be negative (FD, FID, ...) never reach below zero (issue 28)."""
from __future__ import annotations

import math

import numpy as np

from ambient_bench.results.stats import is_nonnegative, seed_interval, t_interval


def test_two_seed_fd_interval_stays_positive_where_the_t_interval_went_below_zero():
    values = [20.0, 62.2]  # mean 41.1: the t-interval of issue 28 read [-225.0, 307.2]
    low, high = t_interval(values)
    assert low < 0
    low, high = seed_interval("fd_digits", values)
    assert 0 < low < min(values) and high > max(values)
    geometric = math.exp(np.mean(np.log(values)))
    assert math.isclose(math.sqrt(low * high), geometric, rel_tol=1e-9)  # symmetric on the log scale


def test_log_interval_covers_the_geometric_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        low, high = seed_interval("fid", rng.lognormal(math.log(30.0), 0.5, 3))
        hits += low <= 30.0 <= high
    assert 0.93 < hits / 2000 < 0.97


def test_other_quantities_keep_the_t_interval_and_zeros_are_cut_at_zero():
    assert seed_interval("kid", [-0.01, 0.02, 0.05]) == t_interval([-0.01, 0.02, 0.05])
    assert seed_interval("precision", [0.2, 0.9]) == t_interval([0.2, 0.9])
    low, high = seed_interval("fd_bandpass", [0.0, 5.0])
    assert low == 0.0 and high == t_interval([0.0, 5.0])[1]
    assert seed_interval("fd_digits", [3.0]) is None
    assert is_nonnegative("fd_dinov2") and is_nonnegative("nn_distance_mean") and not is_nonnegative("kid")


def test_a_table_shows_the_log_interval_and_says_so():
    from test_tables import SPEC, frame

    from ambient_bench.results.render import render
    from ambient_bench.results.tables import load_spec

    md = render(frame(), load_spec(SPEC))["md"].split("## The paper's numbers")[0]
    low, high = seed_interval("fd_digits", [30.0, 32.0])  # Ambient-o's two seeds at σ_B = 0.6
    assert f"**31.0 [{low:.1f}, {high:.1f}]**" in md and low > 0
    assert "FD_digits cannot be negative: their interval over seeds is the log-scale t-interval" in md
