"""Tables in the paper's layout, aggregated from long-form results (laid out by ``results.layout``).

A table spec (YAML) says what identifies a row: ``rows.key`` (e.g. ``method.name``) gives the row
label, and each of ``rows.params`` adds a column of parameter values (the paper's "Parameters /
Values" columns, e.g. σ_B), so a table can be written the paper's long way (one row per method and
blur level) or wide (``columns.key``: one column group per blur level). ``values`` are the
quantities shown in every column group. Seeds are averaged (mean ± std); the best value per column
is in bold. A key may reach into a list or mapping column of the results: ``mix.ood.0.name``.

With ``reference`` the paper's numbers (``ambient_bench.results.reference``) are rendered beneath in
the same layout; with ``compare: true`` also beside ours, one "paper" column per value, with the
difference and whether it is within the reference's tolerance.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ambient_bench.config import yamlio
from ambient_bench.config.schema import Section
from ambient_bench.errors import UserError
from ambient_bench.params import Param, ParamError, check_name, resolve_params
from ambient_bench.results.reference import RefTable, canonical, reference_table

if TYPE_CHECKING:  # pandas and scipy (results.stats) are imported where tables are aggregated: `plan` only
    import pandas as pd  # loads specs (load_spec), and 0.7 s of CPU is half of its own work

VALUE = Section("values entry", {
    "quantity": Param(help="a metric name, or sigma_min_mean / sigma_max_mean", kind=str),
    "label": Param(help="column header (Markdown)", kind=str),
    "latex": Param(None, "column header (LaTeX); default: label", kind=str, nullable=True),
    "fmt": Param("{:.2f}", "format of the numbers", kind=str),
    "better": Param(None, "lower or higher: bold the best row", kind=str, nullable=True, choices=("lower", "higher")),
    "paper": Param(None, "name of the matching quantity in the reference file", kind=str, nullable=True),
    "where": Param({}, "only the results whose configuration has these values, e.g. {sample.guidance: 1.2}, or "
                       "not this value: {sample.guidance: {not: 1}}: the column shows one setting of a key the rows "
                       "do not fix (Table 1's CFG columns)", kind=dict),
    "group": Param([], "header levels above the label, outermost first (nested column groups: [Train, FID])",
                   kind=list, item=str),
})
_PART = {
    "key": Param(help="result column(s) giving the value; a+b joins several ('x/y', missing parts left out)",
                 kind=str),
    "header": Param(help="column header", kind=str),
    "labels": Param({}, "value → text", kind=dict),
    "order": Param(None, "these values first, in this order (others follow, sorted)", kind=list, nullable=True),
    "descending": Param(False, "sort the other values from high to low", kind=bool),
    "missing": Param("–", "text for a row without a value", kind=str),
}
PARAM_COLUMN = Section("params entry", {
    **_PART, "before": Param(False, "show this column before the row label", kind=bool)})
SPEC = {
    "id": Param(help="file name of the rendered table", kind=str, check=check_name),
    "title": Param(help="caption", kind=str),
    "rows": Param(kind=Section("rows", {
        **_PART,
        "key": Param("method.name", _PART["key"].help, kind=str),
        "header": Param("Method", "header of the label column", kind=str),
        "params": Param([], "further columns that identify a row (the paper's 'Parameters / Values')", kind=list),
        "bold_within": Param(None, "the key of a params entry: bold the best row among the rows with the same "
                                   "value of it (e.g. per σ_B), instead of the best of the column", kind=str,
                             nullable=True)})),
    "columns": Param(None, "one column group per value of a key (null = one group)", kind=Section("columns", {
        "key": Param(help="result column whose values are the column groups", kind=str),
        "label": Param("{}", "group header, {} = the value", kind=str),
        "latex": Param(None, "group header in LaTeX", kind=str, nullable=True)}), nullable=True),
    "values": Param(help="quantities shown in every column group", kind=list),
    "reference": Param(None, "paper numbers: {file: relative path, table: id}", kind=Section("reference", {
        "file": Param(kind=str), "table": Param(kind=str)}), nullable=True),
    "compare": Param(False, "a 'paper' column beside each value with a paper quantity: the paper's number, "
                            "and for full-profile results the difference and whether it is within tolerance",
                     kind=bool),
    "notes": Param([], "extra footnote lines", kind=list, item=str),
}
SEED_KEY = "train.seed"


def value_key(value: dict[str, Any]) -> str:
    """A value's key in the grid: its quantity, qualified by its ``where`` filter when it has one."""
    if not value.get("where"):
        return value["quantity"]
    return value["quantity"] + "@" + json.dumps({k: canonical(v) for k, v in value["where"].items()}, sort_keys=True)


def matches(config: dict[str, Any], where: dict[str, Any]) -> bool:
    """``config`` has every value of ``where``; ``{not: v}`` wants any value but v (Table 1's CFG columns:
    every guidance weight but 1, whichever each model's preset uses)."""
    def one(value: Any, wanted: Any) -> bool:
        if isinstance(wanted, dict) and set(wanted) == {"not"}:
            return canonical(value) != canonical(wanted["not"])
        return canonical(value) == canonical(wanted)

    return all(one(lookup(config, key), wanted) for key, wanted in where.items())
ROW = "_row"  # the row identity of every result (a tuple of its parts' canonical values)


@dataclass
class TableSpec:
    path: Path
    id: str
    title: str
    rows: dict[str, Any]
    columns: dict[str, Any] | None
    values: list[dict[str, Any]]
    reference: dict[str, Any] | None
    compare: bool
    notes: list[str]

    @property
    def parts(self) -> list[dict[str, Any]]:
        """What identifies a row, in display order: params shown before the label, the label, the rest."""
        params = self.rows["params"]
        return [p for p in params if p["before"]] + [self.rows] + [p for p in params if not p["before"]]

    def paper_table(self) -> RefTable | None:
        if self.reference is None:
            return None
        return reference_table((self.path.parent / self.reference["file"]).resolve(), self.reference["table"],
                               str(self.path))


def number_format_problem(fmt: str) -> str | None:
    """None when ``fmt`` shows one number (a mean, an interval bound, and signed as a difference); else why not."""
    try:
        shown = [fmt.format(x) for x in (1.0, 3.0, -1234.5678, math.nan)]
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as err:
        return (f"fmt {fmt!r} cannot format a number ({type(err).__name__}: {err}); write a Python format of "
                f"one float, e.g. '{{:.2f}}' or '{{:.3g}}'")
    try:
        fmt.replace("{:", "{:+", 1).format(-0.5)  # a difference from the paper or a baseline, signed
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        return f"fmt {fmt!r}: differences get their sign added by the tables; drop the sign option ('{{:.2f}}')"
    if shown[0] == shown[1]:
        return f"fmt {fmt!r} shows no number; write a Python format of one float, e.g. '{{:.2f}}'"
    return None


def _label_problem(label: str, what: str) -> str | None:
    """A header with ``{}`` for a column group's value (a number or a text)."""
    try:
        label.format(1.5), label.format("x")
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as err:
        return (f"{what} {label!r} cannot take the group's value ({type(err).__name__}: {err}); use '{{}}' where "
                f"the value goes and '{{{{' / '}}}}' for literal braces")
    return None


def _field_problems(spec: dict[str, Any]) -> tuple[tuple, str] | None:
    """(key, problem) of the first spec field that would fail only when the table is rendered."""
    for i, value in enumerate(spec["values"]):
        problem = number_format_problem(value["fmt"])
        if problem:
            return ("values", i, "fmt"), problem
        for key in value["where"]:
            if not isinstance(key, str) or not key:
                return ("values", i, "where"), f"where: {key!r} is not a result column such as sample.guidance"
    for name in ("label", "latex"):
        if spec["columns"] is not None and spec["columns"][name] is not None:
            problem = _label_problem(spec["columns"][name], f"columns.{name}")
            if problem:
                return ("columns", name), problem
    for key, part in [(("rows",), spec["rows"])] + [(("rows", "params", i), p)
                                                   for i, p in enumerate(spec["rows"]["params"])]:
        if any(not k for k in part["key"].split("+")):
            return key + ("key",), f"key {part['key']!r} has an empty part; write result columns joined by '+'"
        for label, text in part["labels"].items():
            if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                return key + ("labels", label), f"labels: {label!r} maps to {text!r}; write the text to show"
    return None


def load_spec(path: Path) -> TableSpec:
    raw, lines = yamlio.load(path)
    try:
        spec = resolve_params(SPEC, raw or {}, (), what="the table spec")
        spec["values"] = [VALUE.resolve(v, ("values", i)) for i, v in enumerate(spec["values"])]
        spec["rows"]["params"] = [PARAM_COLUMN.resolve(p, ("rows", "params", i))
                                  for i, p in enumerate(spec["rows"]["params"])]
        problem = _field_problems(spec)
        if problem:
            raise ParamError(*problem)
    except ParamError as err:
        at = next((lines[err.key[:n]] for n in range(len(err.key), 0, -1) if err.key[:n] in lines), 1)
        raise UserError(f"{path}:{at}: {err.message}") from None
    if spec["columns"] is not None and any(v["where"] for v in spec["values"]):
        raise UserError(f"{path}:{lines.get(('columns',), 1)}: values with 'where' make their own columns; "
                        f"use them without columns.key (nested headers come from each value's 'group')")
    within = spec["rows"]["bold_within"]
    if within is not None and within not in [p["key"] for p in spec["rows"]["params"]]:
        raise UserError(f"{path}:{lines.get(('rows', 'bold_within'), 1)}: bold_within '{within}' is not the key of "
                        f"a rows.params entry ({', '.join(p['key'] for p in spec['rows']['params']) or 'none'})")
    table = TableSpec(path=Path(path), **spec)
    paper = table.paper_table()
    if paper is not None:  # a paper quantity the reference does not have is a typo in the spec
        for i, value in enumerate(table.values):
            if value["paper"] and value["paper"] not in paper.quantities:
                raise UserError(f"{path}:{lines.get(('values', i), 1)}: paper quantity '{value['paper']}' is not in "
                                f"reference table '{paper.id}' (quantities: {', '.join(paper.quantities)})")
    return table


def lookup(config: dict[str, Any], key: str) -> Any:
    """Value of dotted ``key`` in a flat config; descends into list/mapping values (JSON text in results.csv)."""
    if key in config:
        return config[key]
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head not in config:
            continue
        value = config[head]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        for part in parts[cut:]:
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return None
        return value
    return None


def part_value(config: dict[str, Any], part: dict[str, Any]) -> str | None:
    """The canonical text of one row part ('a+b' keys joined by '/', missing ones left out)."""
    texts = [canonical(lookup(config, key)) for key in part["key"].split("+")]
    return "/".join(t for t in texts if t is not None) or None


def row_id(config: dict[str, Any], spec: TableSpec) -> tuple:
    return tuple(part_value(config, part) for part in spec.parts)


def _sortable(value: str | None, part: dict[str, Any]) -> tuple:
    """Missing values first (the paper lists "None" / "–" rows first), then the spec's order, then the
    rest: numbers by value, text alphabetically."""
    order = part["order"] or []
    if value is None:
        return (0, 0, 0.0, "")
    if value in [canonical(o) for o in order]:
        return (1, [canonical(o) for o in order].index(value), 0.0, "")
    try:
        number = float(value)
        return (2, 0, -number if part["descending"] else number, "")
    except ValueError:
        return (3, 0, 0.0, value)


def sort_rows(rows: list[tuple], spec: TableSpec) -> list[tuple]:
    return sorted(rows, key=lambda r: tuple(_sortable(v, p) for v, p in zip(r, spec.parts)))


def _value_key(v: Any) -> tuple:
    """Numbers (numpy's too: pandas hands out numpy.int64) by value, before text."""
    if isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def flat_config(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if "." in k}


def aggregate(df: pd.DataFrame, spec: TableSpec) -> tuple[list, list, dict, dict]:
    """(row ids, column values, {(row, col, value key): (mean, std, n)}, {(row, col): flat config}).

    Values with a ``where`` filter are aggregated over the matching results only; their configurations
    are also under (row, col, value key), for the paper lookup of that column."""
    filters = {value_key(v): v["where"] for v in spec.values if v["where"]}
    if not filters:
        return _aggregate(df, spec)
    records = df.to_dict("records")
    rows, grid, configs = [], {}, {}
    plain = [v for v in spec.values if not v["where"]]
    subsets = [({}, [value_key(v) for v in plain])] if plain else []
    for key, where in filters.items():
        subsets.append((where, [key]))
    for where, keys in subsets:
        # a filtered value reads only its own quantity's results (and their bootstrap bounds): each metric of
        # a cell may come from samples of its own (evaluate.per_metric_sample), with its own sample settings
        own = {q + s for q in {k.split("@", 1)[0] for k in keys} for s in ("", "_boot_low", "_boot_high")}
        mask = [matches(flat_config(record), where) and (not where or record["quantity"] in own)
                for record in records]
        if not any(mask):
            continue
        sub_rows, _, sub_grid, sub_configs = _aggregate(df[mask], spec)
        rows += [r for r in sub_rows if r not in rows]
        for key in keys:
            quantity = key.split("@", 1)[0]
            grid.update({(r, c, key): cell for (r, c, q), cell in sub_grid.items() if q == quantity})
            configs.update({(r, c, key): config for (r, c), config in sub_configs.items()})
        for cell, config in sub_configs.items():
            configs.setdefault(cell, config)
    return sort_rows(rows, spec), [None], grid, configs


def _aggregate(df: pd.DataFrame, spec: TableSpec) -> tuple[list, list, dict, dict]:
    import pandas as pd

    from ambient_bench.results.stats import seed_interval

    col_key = spec.columns["key"] if spec.columns else None
    config_columns = [c for c in df.columns if "." in c]
    for part in spec.parts:
        for key in part["key"].split("+"):
            if key not in df.columns and not any(key.startswith(c + ".") for c in config_columns):
                raise UserError(f"{spec.path}: the results have no column '{key}'; available: "
                                f"{', '.join(config_columns)}")
    if col_key is not None and col_key not in df.columns:
        raise UserError(f"{spec.path}: the results have no column '{col_key}'; available: {', '.join(config_columns)}")
    ids = [row_id(flat_config(record), spec) for record in df.to_dict("records")]
    extra = pd.DataFrame({ROW: pd.Series(ids, index=df.index, dtype=object),
                          "_col": df[col_key] if col_key else 0}, index=df.index)
    df = pd.concat([df.drop(columns=[c for c in extra.columns if c in df.columns]), extra], axis=1)
    row_keys = {k for part in spec.parts for k in part["key"].split("+")}
    varying_ok = {SEED_KEY, col_key, *row_keys}
    compared = [c for c in config_columns if c not in varying_ok
                and not any(c.startswith(k + ".") or k.startswith(c + ".") for k in row_keys)]
    grid, configs = {}, {}
    for (row, col), group in df.dropna(subset=["_col"]).groupby([ROW, "_col"], sort=False):
        distinct = group[compared].astype(str).drop_duplicates()
        if len(distinct) > 1:
            varying = [c for c in compared if group[c].astype(str).nunique() > 1]
            raise UserError(f"{spec.path}: cell ({', '.join(v or '–' for v in row)}, {col}) mixes several "
                            f"configurations (they differ in {', '.join(varying)}); exclude all but one in the "
                            f"suite or add a table per value")
        col = None if col_key is None else col
        configs[(row, col)] = flat_config(group.iloc[0].to_dict())
        for quantity, block in group.groupby("quantity"):
            block = block.dropna(subset=["value"])
            v = block["value"].astype(float)
            seeds = dict(zip(block[SEED_KEY] if SEED_KEY in block else range(len(v)), v))
            grid[(row, col, quantity)] = Cell(v.mean() if len(v) else math.nan,
                                              v.std(ddof=1) if len(v) > 1 else math.nan, len(v), seeds,
                                              seed_interval(quantity, v.to_numpy()))
        for quantity in list(group["quantity"].unique()):  # one seed: the metric's bootstrap over samples
            cell, low, high = (grid.get((row, col, quantity + s)) for s in ("", "_boot_low", "_boot_high"))
            if cell is not None and cell.n == 1 and low is not None and high is not None:
                grid[(row, col, quantity)] = cell._replace(interval=(low.mean, high.mean))
    rows = sort_rows(list(dict.fromkeys(r for r, _ in configs)), spec)
    cols = [None] if col_key is None else sorted(df[col_key].dropna().unique(), key=_value_key)
    return rows, cols, grid, configs


class Cell(NamedTuple):
    """One table cell: mean over seeds, std, count, the value per training seed, the 95% t-interval."""

    mean: float
    std: float
    n: int
    seeds: dict = {}
    interval: tuple[float, float] | None = None
