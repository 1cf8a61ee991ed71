"""The table a suite gets without a spec of its own, and the checks that keep a spec's columns honest.

- ``default_spec``: methods (rows) × the metrics present in the results; every grid axis that varies within a
  method (a σ level, a clean fraction, two Ambient-o settings) becomes a row parameter, so no cell mixes
  configurations.
- ``check_specs``: before training, a spec column showing a metric that no cell of the suite evaluates is a
  one-line error (the silent `–` column of the issue).
- ``absent_quantities``: after a run, the spec's metric columns with no value anywhere (a loud warning, and the
  default table is rendered beside the spec's).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ambient_bench.errors import UserError
from ambient_bench.params import suggest
from ambient_bench.results.tables import SEED_KEY, TableSpec, load_spec

DEFAULT_ID = "methods"
# quantities that describe a cell rather than score it, and may be empty by design (– = none)
NOT_METRICS = ("sigma_min_mean", "sigma_max_mean", "classifier_auc_low", "parameters_m", "nfe")
SUFFIXES = ("_boot_low", "_boot_high", "_heldout", "_win_rate")
METHOD_LABELS = {"clean_only": "Clean only", "all_data": "All data", "ambient_o": "Ambient-o",
                 "filter_finetune": "Filter + fine-tune", "ambient_o_crops": "Ambient-o (crops)"}


def base_quantity(quantity: str) -> str:
    for suffix in SUFFIXES:
        if quantity.endswith(suffix):
            return quantity[:-len(suffix)]
    return quantity


def direction(quantity: str) -> str | None:
    """'lower' / 'higher' for a registered metric's own quantity (its class says), else None (no bold, no verdict)."""
    from ambient_bench.registry import METRICS

    name = base_quantity(quantity)
    if quantity.endswith("_win_rate"):
        return "higher"
    if name not in METRICS.names():
        return None
    return "higher" if METRICS.get(name).higher_is_better else "lower"


def _present(df: pd.DataFrame) -> list[str]:
    """Metric quantities with at least one finite value, in order of appearance."""
    values = pd.to_numeric(df["value"], errors="coerce")
    shown = df.loc[values.notna() & values.map(lambda v: math.isfinite(v) if v == v else False), "quantity"]
    return [q for q in dict.fromkeys(shown.astype(str))
            if q not in NOT_METRICS and not q.endswith(("_boot_low", "_boot_high"))]


def default_spec(df: pd.DataFrame, title: str = "Methods × metrics") -> TableSpec:
    """A spec for ``df``: one row per method (and per value of what else varies within a method)."""
    config = [c for c in df.columns if "." in c and c not in (SEED_KEY, "method.name", "sample.seed")]
    varying = []
    for column in config:
        per_method = df.groupby("method.name")[column].agg(lambda s: s.astype(str).nunique())
        if (per_method > 1).any():
            varying.append(column)
    part = {"labels": {}, "order": None, "descending": False, "missing": "–", "before": False}
    params = [{**part, "key": column, "header": column} for column in varying]
    values = [{"quantity": q, "label": q, "latex": q.replace("_", r"\_"), "fmt": "{:.2f}", "better": direction(q),
               "paper": None, "where": {}, "group": []} for q in _present(df)]
    rows = {**part, "key": "method.name", "header": "Method", "labels": dict(METHOD_LABELS),
            "order": list(METHOD_LABELS), "params": params, "bold_within": None}
    rows.pop("before")
    notes = ["Default table (the suite names no table spec): every metric the results hold; add `tables:` to the "
             "suite for a layout of your own."]
    return TableSpec(path=Path("<default table>"), id=DEFAULT_ID, title=title, rows=rows, columns=None,
                     values=values, reference=None, compare=False, notes=notes)


def absent_quantities(df: pd.DataFrame, spec: TableSpec) -> list[dict[str, Any]]:
    """The spec's metric columns (not NOT_METRICS) that no result row fills."""
    present = set(_present(df))
    return [v for v in spec.values if v["quantity"] not in NOT_METRICS and v["quantity"] not in present]


def table_specs(df: pd.DataFrame, spec_paths: list[Path], warn: bool = True) -> list[TableSpec]:
    """The tables a suite's results get: its specs, plus the default table when it names none or a spec's
    metric column is empty (with ``warn``, said on stderr naming the column and the metric)."""
    specs = [load_spec(path) for path in spec_paths]
    absent = [(spec, value) for spec in specs for value in absent_quantities(df, spec)]
    for spec, value in absent if warn else []:
        print(f"warning: {spec.path}: column '{value['label']}' is empty: no result has {value['quantity']} (the "
              f"results hold {', '.join(sorted(set(df['quantity'].astype(str)))) or 'nothing'}); the default table "
              f"{DEFAULT_ID}.md shows the metrics computed", file=sys.stderr, flush=True)
    return specs + [default_spec(df)] if not specs or absent else specs


def _result_columns(suite: Any) -> set[str]:
    """The columns results.csv will have (results/collect.py): each cell's flattened configuration but its evaluate
    section, and the fixed ones."""
    from ambient_bench.config.suite import flatten
    from ambient_bench.results.collect import PROTOCOL, PROVENANCE

    config = {k for cell in suite.cells for k in flatten({s: v for s, v in cell.config.items() if s != "evaluate"})}
    return config | {"suite", "cell", "quantity", "value", "stage_key", *PROTOCOL, *PROVENANCE}


def _check_keys(spec: TableSpec, columns: set[str]) -> None:
    """Every key a spec reads (row parts, the column key) is a result column, or reaches into one (mix.ood.0.name):
    otherwise ``tables`` would stop after every stage ran."""
    parts = [("rows.key", spec.rows)] + [(f"rows.params.{i}.key", p) for i, p in enumerate(spec.rows["params"])]
    keys = [(field, key) for field, part in parts for key in part["key"].split("+")]
    keys += [("columns.key", spec.columns["key"])] if spec.columns else []
    for field, key in keys:
        if key not in columns and not any(key.startswith(c + ".") for c in columns):
            raise UserError(f"{spec.path}: {field}: '{key}' is not a column of this suite's results"
                            f"{suggest(key, columns)}; use a configuration key such as method.name or "
                            f"mix.clean_fraction")


def check_specs(suite: Any) -> list[TableSpec]:
    """Load every table spec of ``suite`` (every field checked, tables.load_spec); a column whose metric no cell
    evaluates, or a key that no result column holds, is a ``UserError``."""
    from ambient_bench.registry import METRICS

    specs = [load_spec(path) for path in suite.tables]
    columns = _result_columns(suite) if specs else set()
    for spec in specs:
        _check_keys(spec, columns)
    evaluated = sorted({m["name"] for cell in suite.cells for m in cell.config["evaluate"]["metrics"]})
    known = None
    for spec in specs:
        for value in spec.values:
            name = base_quantity(value["quantity"])
            if name in NOT_METRICS or any(name == m or name.startswith(m + "_") for m in evaluated):
                continue
            known = set(METRICS.names()) if known is None else known
            if name in known:
                raise UserError(f"{spec.path}: column '{value['label']}' shows {name}, which no cell of suite "
                                f"{suite.name} evaluates (evaluate.metrics: {', '.join(evaluated) or 'none'}); add "
                                f"{name} to evaluate.metrics, or remove the tables: entry for the default table of "
                                f"the metrics the suite computes")
    return specs
