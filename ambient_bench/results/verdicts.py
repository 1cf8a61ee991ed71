"""What a table says, in plain words: each method against the baselines (clean-only, and all-data where
the table has it), per metric with a direction, from the paired statistics over training seeds
(``results.stats``): the mean paired difference, its 95% t-interval, the sign-flip permutation p-value, and,
when the test cannot tell, about how many seeds would (``stats.seeds_for_power``)."""
from __future__ import annotations

import math
import numpy as np

from ambient_bench.results.layout import label_cells
from ambient_bench.results.stats import (ALPHA, POWER_CAP, SIGN_FLIP_MIN_SEEDS, paired_test, seeds_for_power,
                                        t_interval)
from ambient_bench.results.tables import TableSpec, value_key

BASELINES = ("clean_only", "all_data")  # compared against, in this order
METHOD_KEY = "method.name"
ONE_SEED = ("Verdicts: no paired comparison is possible with one training seed per cell; run two or more "
            "(e.g. train.seed=[0,1,2]) for a verdict per method and metric.")


def _signed(fmt: str, number: float) -> str:
    return fmt.replace("{:", "{:+", 1).format(number).replace("-", "−")


def verdict(name: str, baseline: str, label: str, fmt: str, lower_is_better: bool,
            a: dict, b: dict) -> str | None:
    """One line: method ``a`` ({seed: value}) against ``baseline`` ``b``; None with fewer than 2 shared seeds."""
    shared = sorted(set(a) & set(b), key=str)
    pairs = [(a[s], b[s]) for s in shared if math.isfinite(a[s]) and math.isfinite(b[s])]
    if len(pairs) < 2:
        return None
    d = np.array([x - y for x, y in pairs])
    test = paired_test(d, np.zeros_like(d))
    low, high = t_interval(d) or (math.nan, math.nan)
    head = (f"{name} vs {baseline}: {_signed(fmt, test.mean_difference)} {label} (95% CI "
            f"[{_signed(fmt, low)}, {_signed(fmt, high)}], p = {test.p_value:.2g}, {test.n} seeds)")
    if test.p_value < ALPHA:
        good = (test.mean_difference < 0) == lower_is_better
        return f"{head}: {'better' if good else 'worse'} ({'lower' if test.mean_difference < 0 else 'higher'} " \
               f"{label}; {'lower' if lower_is_better else 'higher'} is better)"
    needed = seeds_for_power(test.mean_difference, float(d.std(ddof=1)))
    if needed is None:
        return f"{head}: no difference at these seeds"
    size = f"more than {POWER_CAP:,}" if needed > POWER_CAP else f"about {needed}"
    # below SIGN_FLIP_MIN_SEEDS the test cannot reject even when the interval excludes zero: say why
    why = f" (the sign-flip test needs {SIGN_FLIP_MIN_SEEDS} seeds or more to reach p < 0.05)" \
        if test.n < SIGN_FLIP_MIN_SEEDS else ""
    return f"{head}: no evidence either way{why}; {size} seeds would detect a difference of this size"


def table_verdicts(spec: TableSpec, rows: list, cols: list, grid: dict) -> list[str]:
    """Verdict lines for one rendered table (empty when it has no method rows, baseline or direction)."""
    parts = spec.parts
    at = next((i for i, part in enumerate(parts) if part["key"] == METHOD_KEY), None)
    values = [v for v in spec.values if v["better"] is not None]
    if at is None or not values:
        return []
    # a method's own parameters (method.sigma_min) tell its rows apart; the others (a σ level) say which rows
    # compete: a method is compared with the baseline row of the same setting
    setting = [i for i, part in enumerate(parts) if i != at and not part["key"].startswith("method.")]

    def name(row: tuple, keep: list[int]) -> str:
        cells = label_cells(spec, row, None)
        return ", ".join(cells[i] for i in keep if row[i] is not None)

    own = [at] + [i for i in range(len(parts)) if i != at and i not in setting]
    lines, compared = [], 0
    for col in cols:
        for row in rows:
            if row[at] is None:
                continue
            context = [f"{parts[i]['header']} {label_cells(spec, row, None)[i]}" for i in setting
                       if row[i] is not None]
            if col is not None and spec.columns is not None:
                context.append(spec.columns["label"].format(col))
            where = f"[{', '.join(context)}] " if context else ""
            for base_name in BASELINES:
                if row[at] == base_name or (row[at] in BASELINES and BASELINES.index(row[at]) < BASELINES.index(
                        base_name)):
                    continue  # all-data is compared with clean-only, not the other way round
                base = next((r for r in rows if r[at] == base_name and all(r[i] == row[i] for i in setting)), None)
                if base is None:
                    continue
                for value in values:
                    key = value_key(value)
                    if (row, col, key) not in grid or (base, col, key) not in grid:
                        continue
                    compared += 1
                    line = verdict(name(row, own), name(base, [at]), value["label"], value["fmt"],
                                   value["better"] == "lower", grid[(row, col, key)].seeds,
                                   grid[(base, col, key)].seeds)
                    if line is not None:
                        lines.append(where + line)
    if compared and not lines:
        return [ONE_SEED]
    return lines
