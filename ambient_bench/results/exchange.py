"""The exchange rate of bad images for good ones (issue 20): how many clean images clean-only training
would need to match a method that also used the corrupted pool.

For every number of clean images n and method M, take M's score s (mean over seeds, with its 95%
interval: log-scale for a non-negative metric, ``stats.seed_interval``) and find on the clean-only curve
— its seed means against log n, linearly interpolated — the n* where clean-only scores s: M with n
clean images and the bad pool is worth n* clean images, i.e. the bad pool is worth n* − n good ones. The
interval of n* comes from M's interval. Where s lies beyond the clean-only curve, n* is only bounded
("> the largest n" / "< the smallest n").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ambient_bench.results.stats import seed_interval


@dataclass(frozen=True)
class Exchange:
    method: str
    n_clean: float
    score: float
    interval: tuple[float, float] | None
    equivalent: float | None        # n*: clean images clean-only needs for this score (None: off the curve)
    equivalent_low: float | None    # n* at the worse end of the score's interval (fewer clean images)
    equivalent_high: float | None   # n* at the better end
    bound: str | None = None        # "above" / "below" the clean-only grid when n* is off the curve


def clean_equivalent(curve_n: np.ndarray, curve_score: np.ndarray, score: float,
                     lower_is_better: bool = True) -> tuple[float | None, str | None]:
    """n* with clean-only score(n*) = ``score`` on the log-n interpolated curve; (None, bound) off it."""
    order = np.argsort(curve_n)
    n, s = np.log(np.asarray(curve_n, float)[order]), np.asarray(curve_score, float)[order]
    if not lower_is_better:
        s, score = -s, -score
    for a in range(len(n) - 1):  # the first segment that crosses the score (curves need not be monotone)
        lo, hi = s[a], s[a + 1]
        if min(lo, hi) <= score <= max(lo, hi):
            t = 0.0 if hi == lo else (score - lo) / (hi - lo)
            return float(math.exp(n[a] + t * (n[a + 1] - n[a]))), None
    best, worst = s.min(), s.max()
    if score < best:
        return None, "above"   # better than clean-only with the most clean images of the grid
    if score > worst:
        return None, "below"   # worse than clean-only with the fewest
    return None, None


def exchange_rates(points: dict[tuple[str, float], list[float]], clean_method: str = "clean_only",
                   lower_is_better: bool = True, quantity: str = "") -> list[Exchange]:
    """``points``: (method, n_clean) → the metric per training seed. One Exchange per non-clean point; the
    score's interval is ``seed_interval(quantity, ...)`` (log-scale for a non-negative ``quantity``)."""
    clean = sorted((n, float(np.mean(v))) for (m, n), v in points.items() if m == clean_method and v)
    if len(clean) < 2:
        return []
    curve_n, curve_s = np.array([n for n, _ in clean]), np.array([s for _, s in clean])
    out = []
    for (method, n), values in sorted(points.items()):
        if method == clean_method or not values:
            continue
        score, interval = float(np.mean(values)), seed_interval(quantity, values)
        equivalent, bound = clean_equivalent(curve_n, curve_s, score, lower_is_better)
        ends = [None, None]
        if interval is not None:
            better, worse = (interval[0], interval[1]) if lower_is_better else (interval[1], interval[0])
            ends = [clean_equivalent(curve_n, curve_s, e, lower_is_better)[0] for e in (better, worse)]
        out.append(Exchange(method, n, score, interval, equivalent, ends[1], ends[0], bound))
    return out
