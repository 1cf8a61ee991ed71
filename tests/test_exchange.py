"""The exchange rate of bad images for good ones (issue 20): read off the clean-only curve."""
from __future__ import annotations

import numpy as np
import pytest

from ambient_bench.results.exchange import clean_equivalent, exchange_rates

GRID = np.array([25, 50, 100, 200, 400, 800])


def test_a_method_as_good_as_twice_the_clean_data_is_worth_twice_the_clean_images():
    curve = 100 / np.sqrt(GRID)  # clean-only FD falls as n^-1/2
    points = {("clean_only", n): [100 / np.sqrt(n)] * 3 for n in GRID}
    rng = np.random.default_rng(0)
    for n in (50, 100, 200):  # ambient_o scores what clean-only scores with 2n clean images
        points[("ambient_o", n)] = list(100 / np.sqrt(2 * n) + rng.normal(0, 0.05, 3))
    rates = {r.n_clean: r for r in exchange_rates(points)}
    for n in (50, 100, 200):
        assert rates[n].equivalent == pytest.approx(2 * n, rel=0.05)
        assert rates[n].equivalent_low < rates[n].equivalent < rates[n].equivalent_high
    assert clean_equivalent(GRID, curve, 1.0)[1] == "above"   # better than 800 clean images can do
    assert clean_equivalent(GRID, curve, 50.0)[1] == "below"  # worse than 25 clean images


def test_higher_is_better_metrics_read_the_curve_the_other_way():
    curve = np.log(GRID)  # e.g. a diversity score growing with data
    n_star, bound = clean_equivalent(GRID, curve, float(np.log(300)), lower_is_better=False)
    assert bound is None and n_star == pytest.approx(300, rel=1e-6)
