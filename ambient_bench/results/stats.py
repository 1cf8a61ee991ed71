"""Which differences in a table are real: intervals over training seeds, paired tests between methods,
and a bootstrap of Fréchet distances over the generated samples.

- ``t_interval``: the 95% Student-t interval of a mean over seeds (scipy.stats.t), None below two seeds.
- ``paired_test``: two methods trained on the same seeds, compared seed by seed: the exact sign-flip
  permutation test of the mean paired difference (all 2^n sign patterns up to 2^14, else a seeded
  Monte Carlo sample), its two-sided p-value and the effect size d_z = mean / sd of the differences.
- ``significant_best``: the rows a table sets in bold: the best row and every row whose paired test
  against it does not reject at ``alpha`` (a tie the data cannot break); nothing when the rows share
  fewer than two seeds (no test is possible).
- ``seeds_for_power``: how many paired seeds would detect a difference of the observed size (80% power,
  α = 0.05), from the observed spread of the paired differences (see its docstring for the method).
- ``frechet_bootstrap``: the FD of resampled generated features against fixed reference statistics,
  as a percentile interval (the sampling noise of one model's score).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg, stats

ALPHA = 0.05
EXACT_LIMIT = 14  # up to 2^14 sign patterns are enumerated; more are sampled
MONTE_CARLO = 20_000


def t_interval(values: np.ndarray | list[float], level: float = 0.95) -> tuple[float, float] | None:
    """(low, high) of the t-interval of the mean; None with fewer than two finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


@dataclass(frozen=True)
class PairedResult:
    n: int                 # seeds both methods have
    mean_difference: float  # a − b
    p_value: float          # two-sided, sign-flip permutation
    effect_size: float      # d_z: mean difference / sd of the differences (inf when they are all equal)


def paired_test(a: np.ndarray | list[float], b: np.ndarray | list[float], seed: int = 0) -> PairedResult:
    """Sign-flip permutation test of mean(a − b) = 0 for paired values (one pair per training seed)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return PairedResult(0, math.nan, math.nan, math.nan)
    observed = abs(d.mean())
    if n <= EXACT_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(MONTE_CARLO, n))
    null = np.abs((signs * d).mean(axis=1))
    p = float(np.mean(null >= observed - 1e-12 * max(1.0, observed)))
    effect = math.nan
    if n > 1:
        sd = d.std(ddof=1)
        effect = d.mean() / sd if sd > 0 else math.copysign(math.inf, d.mean()) if d.mean() else 0.0
    return PairedResult(n, float(d.mean()), p, float(effect))


def significant_best(by_row: dict, lower_is_better: bool, alpha: float = ALPHA) -> set:
    """Rows to set in bold. ``by_row``: row → {seed: value}. The best mean, plus every row the paired test
    cannot tell from it; the empty set when the best shares fewer than two seeds with a competitor."""
    means = {r: float(np.mean(list(v.values()))) for r, v in by_row.items() if v}
    means = {r: m for r, m in means.items() if math.isfinite(m)}
    if len(means) < 2:
        return set()
    best = (min if lower_is_better else max)(means, key=means.get)
    bold = {best}
    for row in means:
        if row == best:
            continue
        shared = sorted(set(by_row[row]) & set(by_row[best]))
        if len(shared) < 2:
            return set()  # no test possible: nothing is claimed
        result = paired_test([by_row[row][s] for s in shared], [by_row[best][s] for s in shared])
        if not result.p_value < alpha:
            bold.add(row)
    return bold


SIGN_FLIP_MIN_SEEDS = next(n for n in range(1, 64) if 2 / 2 ** n < ALPHA)  # 6: below it no p-value < α
POWER_CAP = 1000


def seeds_for_power(mean_difference: float, sd_difference: float, alpha: float = ALPHA,
                    power: float = 0.8) -> int | None:
    """Seeds (pairs) needed to detect ``mean_difference`` with probability ``power`` at two-sided ``alpha``.

    Method: the power of a two-sided paired t-test whose effect size d_z = mean / sd is the observed one,
    computed exactly with the noncentral t distribution (scipy.stats.nct, noncentrality d_z·√n, n − 1
    degrees of freedom); the smallest such n, but at least SIGN_FLIP_MIN_SEEDS, because the sign-flip
    permutation test that judges the tables cannot reach p < 0.05 with fewer seeds. The observed d_z is
    itself noisy at a few seeds, so the answer is a rough guide ("about N"). None when the difference is
    zero or not finite; POWER_CAP + 1 means "more than POWER_CAP"."""
    if not math.isfinite(mean_difference) or mean_difference == 0 or not math.isfinite(sd_difference):
        return None
    if sd_difference <= 0:
        return SIGN_FLIP_MIN_SEEDS
    d = abs(mean_difference) / sd_difference
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, int((z / d) ** 2))  # the normal approximation: the t-test needs at least this many
    while n <= POWER_CAP:
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = d * math.sqrt(n)
        achieved = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
        if achieved >= power:
            return max(n, SIGN_FLIP_MIN_SEEDS)
        n += 1
    return POWER_CAP + 1


def frechet(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    covmean = np.real(linalg.sqrtm(sigma1 @ sigma2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_bootstrap(features: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray, resamples: int = 200,
                      level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the FD of generated ``features`` (N×D, resampled with replacement) against
    fixed reference statistics."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = features[rng.integers(0, len(features), len(features))]
        values.append(frechet(pick.mean(axis=0), np.cov(pick, rowvar=False), ref_mu, ref_sigma))
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


# Quantities that cannot be negative: Fréchet distances (FD, FID and every fd_* metric), nearest-neighbour
# distances, the Vendi score (>= 1) and the annotation noise levels. KID is not among them: its unbiased
# estimator can fall below zero.
NONNEGATIVE_PREFIXES = ("fd_", "fid", "nn_distance", "vendi", "sigma_min", "sigma_max")


def is_nonnegative(quantity: str) -> bool:
    """Whether a result quantity is known never to be negative (its interval must not cross zero)."""
    return quantity.startswith(NONNEGATIVE_PREFIXES)


def seed_interval(quantity: str, values: np.ndarray | list[float], level: float = 0.95) -> tuple[float, float] | None:
    """The 95% interval a table shows for a mean over seeds. A non-negative quantity (``is_nonnegative``) with
    every value above zero gets the log-scale t-interval: the t-interval of the log values, exponentiated (an
    interval for the geometric mean, a positive quantity's typical value, that never reaches below zero); one
    with a zero among its values, the t-interval with its low end cut at zero. Other quantities: ``t_interval``.
    None with fewer than two finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not is_nonnegative(quantity):
        return t_interval(v, level)
    if len(v) >= 2 and (v > 0).all():
        low, high = t_interval(np.log(v), level)
        return float(math.exp(low)), float(math.exp(high))
    interval = t_interval(v, level)
    return None if interval is None else (max(0.0, interval[0]), interval[1])
