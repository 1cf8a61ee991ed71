"""Tables in the paper's layout, rendered from long-form results (Markdown and LaTeX).

A table spec (YAML) names the config key that gives the rows (e.g. ``method.name``), the key
that gives the column groups (e.g. ``mix.corruption.sigma``) and the quantities shown in
each group. Seeds are averaged (mean ± std); the best value per column is in bold; the
footnote is generated from the protocol columns of the results. Paper numbers, when the spec
points at a reference file, are rendered beneath in the same layout, labelled as such.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ambient_bench.config import yamlio
from ambient_bench.config.schema import Section
from ambient_bench.errors import UserError
from ambient_bench.params import Param, ParamError, resolve_params

VALUE = Section("values entry", {
    "quantity": Param(help="a metric name, or sigma_min_mean", kind=str),
    "label": Param(help="column header (Markdown)", kind=str),
    "latex": Param(None, "column header (LaTeX); default: label", kind=str, nullable=True),
    "fmt": Param("{:.2f}", "format of the numbers", kind=str),
    "better": Param(None, "lower or higher: bold the best row", kind=str, nullable=True, choices=("lower", "higher")),
    "paper": Param(None, "name of the matching quantity in the reference file", kind=str, nullable=True),
})
SPEC = {
    "id": Param(help="file name of the rendered table", kind=str),
    "title": Param(help="caption", kind=str),
    "rows": Param(kind=Section("rows", {
        "key": Param("method.name", "result column whose values are the rows; a+b joins several "
                                    "(row value 'x/y', empty parts left out)", kind=str),
        "order": Param(None, "row order (others follow, sorted)", kind=list, nullable=True),
        "labels": Param({}, "value → row label", kind=dict),
        "header": Param("Method", "header of the label column", kind=str)})),
    "columns": Param(kind=Section("columns", {
        "key": Param(help="result column whose values are the column groups", kind=str),
        "label": Param("{}", "group header, {} = the value", kind=str),
        "latex": Param(None, "group header in LaTeX", kind=str, nullable=True)})),
    "values": Param(help="quantities shown in every column group", kind=list),
    "reference": Param(None, "paper numbers: {file: relative path, table: id}", kind=Section("reference", {
        "file": Param(kind=str), "table": Param(kind=str)}), nullable=True),
    "notes": Param([], "extra footnote lines", kind=list, item=str),
}
SEED_KEY = "train.seed"
ROW = "_row"  # the row value of every result (the row key's columns joined)


@dataclass
class TableSpec:
    path: Path
    id: str
    title: str
    rows: dict[str, Any]
    columns: dict[str, Any]
    values: list[dict[str, Any]]
    reference: dict[str, Any] | None
    notes: list[str]


def load_spec(path: Path) -> TableSpec:
    raw, lines = yamlio.load(path)
    try:
        spec = resolve_params(SPEC, raw or {}, (), what="the table spec")
        spec["values"] = [VALUE.resolve(v, ("values", i)) for i, v in enumerate(spec["values"])]
    except ParamError as err:
        raise UserError(f"{path}:{lines.get(err.key[:2], lines.get(err.key[:1], 1))}: {err.message}") from None
    return TableSpec(path=Path(path), **spec)


def _value_key(v: Any) -> Any:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def aggregate(df: pd.DataFrame, spec: TableSpec) -> tuple[list, list, dict]:
    """(row values, column values, {(row, col, quantity): (mean, std, n)})."""
    row_keys = spec.rows["key"].split("+")
    for key in (*row_keys, spec.columns["key"]):
        if key not in df.columns:
            raise UserError(f"{spec.path}: the results have no column '{key}'; available: "
                            f"{', '.join(c for c in df.columns if '.' in c)}")
    config_cols = [c for c in df.columns if "." in c and c not in (SEED_KEY, *row_keys, spec.columns["key"])]
    joined = [("/".join(str(v) for v in values if pd.notna(v)) or None)
              for values in df[row_keys].itertuples(index=False)]
    df = df.assign(**{ROW: pd.Series(joined, index=df.index, dtype=object)})
    present = [r for r in df[ROW].dropna().unique()]
    order = [r for r in (spec.rows["order"] or []) if r in present] + sorted(
        (r for r in present if r not in (spec.rows["order"] or [])), key=str)
    cols = sorted(df[spec.columns["key"]].dropna().unique(), key=_value_key)
    grid = {}
    for (row, col), group in df.groupby([ROW, spec.columns["key"]]):
        distinct = group[config_cols].astype(str).drop_duplicates()
        if len(distinct) > 1:
            varying = [c for c in config_cols if group[c].astype(str).nunique() > 1]
            raise UserError(f"{spec.path}: cell ({row}, {col}) mixes several configurations (they differ in "
                            f"{', '.join(varying)}); exclude all but one in the suite or add a table per value")
        for quantity, values in group.groupby("quantity")["value"]:
            v = values.dropna().astype(float)
            grid[(row, col, quantity)] = (v.mean() if len(v) else math.nan,
                                          v.std(ddof=1) if len(v) > 1 else math.nan, len(v))
    return order, cols, grid


def _best(grid: dict, rows: list, col: Any, value: dict) -> Any:
    if value["better"] is None:
        return None
    means = {r: grid[(r, col, value["quantity"])][0] for r in rows if (r, col, value["quantity"]) in grid}
    means = {r: m for r, m in means.items() if not math.isnan(m)}
    if len(means) < 2:
        return None
    return (min if value["better"] == "lower" else max)(means, key=means.get)


def _fmt(cell: tuple | None, fmt: str, latex: bool) -> str:
    if cell is None or math.isnan(cell[0]):
        return "–"
    mean, std, _ = cell
    text = fmt.format(mean)
    if not math.isnan(std) and std > 0:
        text += (r" $\pm$ " if latex else " ± ") + fmt.format(std)
    return text


def _matrix(spec: TableSpec, rows: list, cols: list, grid: dict, latex: bool) -> list[list[str]]:
    body = []
    for row in rows:
        line = [str(spec.rows["labels"].get(row, row))]
        for col in cols:
            for value in spec.values:
                text = _fmt(grid.get((row, col, value["quantity"])), value["fmt"], latex)
                if _best(grid, rows, col, value) == row:
                    text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
                line.append(text)
        body.append(line)
    return body


def _headers(spec: TableSpec, cols: list, latex: bool) -> tuple[list[str], list[str]]:
    group = spec.columns["latex"] if latex and spec.columns["latex"] else spec.columns["label"]
    groups = [group.format(c) for c in cols]
    subs = [(v["latex"] or v["label"]) if latex else v["label"] + {"lower": " ↓", "higher": " ↑"}.get(v["better"], "")
            for v in spec.values]
    return groups, subs


def to_markdown(spec: TableSpec, rows: list, cols: list, grid: dict) -> str:
    groups, subs = _headers(spec, cols, latex=False)
    headers = [spec.rows["header"]] + [f"{g} · {s}" if len(subs) > 1 else g for g in groups for s in subs]
    frame = pd.DataFrame(_matrix(spec, rows, cols, grid, latex=False), columns=headers)
    return frame.to_markdown(index=False, tablefmt="github", colalign=["left"] + ["right"] * (len(headers) - 1))


def to_latex(spec: TableSpec, rows: list, cols: list, grid: dict) -> str:
    groups, subs = _headers(spec, cols, latex=True)
    k = len(subs)
    lines = [r"\begin{tabular}{l" + " ".join(["c" * k] * len(cols)) + "}", r"\toprule"]
    if k > 1:
        lines.append(" & " + " & ".join(rf"\multicolumn{{{k}}}{{c}}{{{g}}}" for g in groups) + r" \\")
        lines.append("".join(rf"\cmidrule(lr){{{2 + i * k}-{1 + (i + 1) * k}}}" for i in range(len(cols))))
        lines.append(spec.rows["header"] + " & " + " & ".join(subs * len(cols)) + r" \\")
    else:
        lines.append(spec.rows["header"] + " & " + " & ".join(groups) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(r) + r" \\" for r in _matrix(spec, rows, cols, grid, latex=True)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)
