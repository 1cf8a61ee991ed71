"""The exchange-rate table and figure of a data-value suite (issue 20), from its results.csv:

    python benchmarks/tools/exchange_rate.py benchmarks/data_value_cpu_digits.yaml [--metric fd_digits]

For every method and number of clean images n (the suite's ``mix.max_clean`` axis), the number n* of clean
images clean-only training needs to reach the method's score (ambient_bench/results/exchange.py: the
clean-only seed means interpolated on log n; the interval from the method's 95% t-interval over seeds).
Writes ``exchange_rate_<metric>.md`` and ``.png`` beside the suite's results.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from ambient_bench.config.suite import load_suite
from ambient_bench.registry import METRICS
from ambient_bench.results.exchange import exchange_rates
from ambient_bench.results.report_plots import LEGEND, plain_log_axis
from ambient_bench.results.stats import is_nonnegative

AXIS = "mix.max_clean"


def method_name(row: pd.Series) -> str:
    annotate = row.get("method.annotate")
    return row["method.name"] + (f"/{annotate}" if isinstance(annotate, str) and annotate else "")


def fmt(n: float | None) -> str:
    return "–" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{n:,.0f}"


def monotonicity_warning(points: dict[tuple[str, float], list[float]], lower: bool) -> list[str]:
    """Lines warning that the clean-only seed means do not improve steadily with n_clean (then n* is the first
    crossing of a curve the seed spread makes; read it with its interval); none when they do."""
    curve = sorted((n, sum(v) / len(v)) for (method, n), v in points.items() if method == "clean_only")
    means = [m if lower else -m for _, m in curve]
    if all(b <= a for a, b in zip(means, means[1:])):
        return []
    shown = ", ".join(f"{m:.4g} at {n:,.0f}" for n, m in curve)
    return [f"**The clean-only curve is not monotone in n_clean** ({shown}): n* is where it first crosses the "
            "method's score; where the curve turns, n* is unreliable and the intervals are the result.", ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite")
    parser.add_argument("--metric", default="fd_digits")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    results = Path(suite.results_dir)
    df = pd.read_csv(results / "results.csv")
    df = df[df["quantity"] == args.metric]
    lower = not METRICS.get(args.metric).higher_is_better
    points: dict[tuple[str, float], list[float]] = {}
    for _, row in df.iterrows():
        points.setdefault((method_name(row), float(row[AXIS])), []).append(float(row["value"]))
    rates = exchange_rates(points, lower_is_better=lower, quantity=args.metric)
    lines = [f"# Exchange rate of bad images for good ones ({suite.name}, {args.metric})", "",
             "n* = the clean images clean-only training needs to score what the method scores with n_clean clean "
             "images and the bad pool; in brackets, n* at the ends of the method's 95% interval over seeds "
             + ("(log-scale t-interval: the metric cannot be negative). " if is_nonnegative(args.metric)
                else "(t-interval). ") + "'> max' / '< min': beyond the clean-only grid.", "",
             *monotonicity_warning(points, lower),
             f"| method | n_clean | {args.metric} | n* (clean-equivalent) | the bad pool is worth |",
             "|---|---:|---:|---:|---:|"]
    for r in rates:
        interval = "" if r.interval is None else f" [{r.interval[0]:.4g}, {r.interval[1]:.4g}]"
        if r.equivalent is None:
            n_star = {"above": f"> {max(n for _, n in points):,.0f}", "below": f"< {min(n for _, n in points):,.0f}"}
            worth = {"above": f"> {max(n for _, n in points) - r.n_clean:,.0f} clean images",
                     "below": "less than nothing (worse than clean-only)"}
            lines.append(f"| {r.method} | {r.n_clean:,.0f} | {r.score:.4g}{interval} | {n_star.get(r.bound, '–')} | "
                         f"{worth.get(r.bound, '–')} |")
        else:
            bracket = "" if r.interval is None else f" [{fmt(r.equivalent_low)}, {fmt(r.equivalent_high)}]"
            lines.append(f"| {r.method} | {r.n_clean:,.0f} | {r.score:.4g}{interval} | {fmt(r.equivalent)}{bracket} | "
                         f"{r.equivalent - r.n_clean:+,.0f} clean images |")
    stem = results / f"exchange_rate_{args.metric}"
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    grid = sorted({n for _, n in points})
    ax.plot(grid, grid, color="grey", linestyle="--", linewidth=1, label="worth its clean images only")
    for k, method in enumerate(sorted({r.method for r in rates})):
        mine = [r for r in rates if r.method == method and r.equivalent is not None]
        if not mine:
            continue
        x = [r.n_clean for r in mine]
        y = [r.equivalent for r in mine]
        low = [r.equivalent - (r.equivalent_low or r.equivalent) for r in mine]
        high = [(r.equivalent_high or r.equivalent) - r.equivalent for r in mine]
        ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=method, color=f"C{k}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_axis(ax.xaxis, grid)  # 25, 50, 100 rather than overlapping 3×10¹4×10¹ minor labels
    plain_log_axis(ax.yaxis)
    ax.set_xlabel("clean images the method had (n_clean)")
    ax.set_ylabel("clean images clean-only needs for its score (n*)")
    ax.set_title(f"{suite.name}: {args.metric}; above the dashed line the bad pool helps", fontsize=9)
    ax.legend(**LEGEND)
    fig.savefig(stem.with_suffix(".png"), dpi=110, bbox_inches="tight", pad_inches=0.05)
    print(f"wrote {stem.with_suffix('.md')}, {stem.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
