"""A table in Markdown and LaTeX: the cells of ``tables.aggregate`` laid out in the spec's rows and column
groups (nested headers for values with ``group``), with the bold that the data support
(``results.stats.significant_best``) and an optional paper column beside each value."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ambient_bench.results.reference import canonical
from ambient_bench.results.stats import significant_best
from ambient_bench.results.tables import TableSpec, value_key


def bold_rows(grid: dict, rows: list, col: Any, value: dict, significance: bool) -> set:
    """The rows set in bold in one column: with ``significance`` those the paired tests cannot separate
    from the best (results.stats.significant_best); without, the best mean (the paper's own numbers)."""
    if value["better"] is None:
        return set()
    if not significance:
        best = best_row(grid, rows, col, value)
        return set() if best is None else {best}
    key = value_key(value)
    seeds = {r: grid[(r, col, key)].seeds for r in rows if (r, col, key) in grid}
    return significant_best(seeds, lower_is_better=value["better"] == "lower")


def best_row(grid: dict, rows: list, col: Any, value: dict) -> Any:
    if value["better"] is None:
        return None
    key = value_key(value)
    means = {r: grid[(r, col, key)][0] for r in rows if (r, col, key) in grid}
    means = {r: m for r, m in means.items() if not math.isnan(m)}
    if len(means) < 2:
        return None
    return (min if value["better"] == "lower" else max)(means, key=means.get)


def fmt_cell(cell: tuple | None, fmt: str, latex: bool) -> str:
    """The mean, with its 95% t-interval in brackets when there are two seeds or more."""
    if cell is None or math.isnan(cell[0]):
        return "–"
    text = fmt.format(cell[0])
    interval = cell[4] if len(cell) > 4 else None
    if interval is not None and interval[1] > interval[0]:
        text += f" [{fmt.format(interval[0])}, {fmt.format(interval[1])}]"
    return text


def label_cells(spec: TableSpec, row: tuple, labels: dict[str, str] | None) -> list[str]:
    """The identifying cells of a row; ``labels`` overrides the row label (the paper's own names)."""
    out = []
    for part, value in zip(spec.parts, row):
        if part is spec.rows and labels is not None:
            out.append(labels[row])
        elif value is None:
            out.append(part["missing"])
        else:
            names = {canonical(k): v for k, v in part["labels"].items()}
            out.append(str(names.get(value, value)))
    return out


@dataclass
class Layout:
    """What one rendering shows: values per column group, and an optional paper column beside each."""

    spec: TableSpec
    values: list[dict[str, Any]]
    paper: dict[tuple, str] | None = None    # (row, col, quantity) → text of the paper column
    row_labels: dict[tuple, str] | None = None
    significance: bool = True                 # bold by paired tests over seeds (False: the best mean)


def _peers(spec: TableSpec, rows: list, row: tuple) -> list:
    """The rows a row competes with for bold: all of them, or those sharing its ``bold_within`` value."""
    within = spec.rows["bold_within"]
    if within is None:
        return rows
    i = next(i for i, part in enumerate(spec.parts) if part["key"] == within)
    return [r for r in rows if r[i] == row[i]]


def matrix(layout: Layout, rows: list, cols: list, grid: dict, latex: bool) -> list[list[str]]:
    body = []
    for row in rows:
        line = label_cells(layout.spec, row, layout.row_labels)
        for col in cols:
            for value in layout.values:
                text = fmt_cell(grid.get((row, col, value_key(value))), value["fmt"], latex)
                if row in bold_rows(grid, _peers(layout.spec, rows, row), col, value, layout.significance):
                    text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
                line.append(text)
                if layout.paper is not None and value.get("paper"):
                    line.append(layout.paper.get((row, col, value_key(value)), "–"))
        body.append(line)
    return body


def _value_headers(layout: Layout, latex: bool) -> list[str]:
    out = []
    for v in layout.values:
        out.append((v["latex"] or v["label"]) if latex else v["label"] + {"lower": " ↓", "higher": " ↑"}.get(
            v["better"], ""))
        if layout.paper is not None and v.get("paper"):
            out.append("paper")
    return out


def _expanded(layout: Layout) -> list[dict[str, Any]]:
    """The value entry behind every value header (a paper column repeats its value's entry)."""
    out = []
    for v in layout.values:
        out.append(v)
        if layout.paper is not None and v.get("paper"):
            out.append(v)
    return out


def _group_rows(layout: Layout, n_ident: int) -> list[str]:
    """LaTeX header lines of nested groups: at each level, runs of equal labels become one multicolumn."""
    entries = _expanded(layout)
    depth = max(len(v["group"]) for v in entries)
    lines = []
    for level in range(depth):
        cells, rules, i = [], [], 0
        while i < len(entries):
            label = entries[i]["group"][level] if level < len(entries[i]["group"]) else ""
            prefix = entries[i]["group"][:level + 1]
            j = i + 1
            while j < len(entries) and entries[j]["group"][:level + 1] == prefix and label:
                j += 1
            label = label.replace("_", r"\_")
            cells.append(rf"\multicolumn{{{j - i}}}{{c}}{{{label}}}" if j - i > 1 else label)
            if label:
                rules.append(rf"\cmidrule(lr){{{n_ident + i + 1}-{n_ident + j}}}")
            i = j
        lines += ["&" * (n_ident - 1) + " & " + " & ".join(cells) + r" \\", "".join(rules)]
    return lines


def _group_labels(spec: TableSpec, cols: list, latex: bool) -> list[str]:
    if spec.columns is None:
        return [""]
    group = spec.columns["latex"] if latex and spec.columns["latex"] else spec.columns["label"]
    return [group.format(c) for c in cols]


def to_markdown(layout: Layout, rows: list, cols: list, grid: dict) -> str:
    spec = layout.spec
    groups, subs = _group_labels(spec, cols, latex=False), _value_headers(layout, latex=False)
    ident = [part["header"] for part in spec.parts]
    if any(v["group"] for v in layout.values):  # nested groups: every level above the label, joined
        subs = [" · ".join([*v["group"], s]) for v, s in zip(_expanded(layout), subs)]
    headers = ident + [f"{g} · {s}" if g and len(subs) > 1 else (g or s) for g in groups for s in subs]
    frame = pd.DataFrame(matrix(layout, rows, cols, grid, latex=False), columns=headers)
    # disable_numparse: cells are already formatted ("6.00" must not become "6")
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True,
                             colalign=["left"] * len(ident) + ["right"] * (len(headers) - len(ident)))


def to_latex(layout: Layout, rows: list, cols: list, grid: dict) -> str:
    spec = layout.spec
    groups, subs = _group_labels(spec, cols, latex=True), _value_headers(layout, latex=True)
    k, n_ident = len(subs), len(spec.parts)
    lines = [r"\begin{tabular}{" + "l" * n_ident + " ".join(["c" * k] * len(cols)) + "}", r"\toprule"]
    ident = " & ".join(part["header"] for part in spec.parts)
    if spec.columns is None and any(v["group"] for v in layout.values):
        lines += _group_rows(layout, n_ident)
    if spec.columns is not None and k > 1:
        lines.append("&" * (n_ident - 1) + " & " + " & ".join(rf"\multicolumn{{{k}}}{{c}}{{{g}}}" for g in groups)
                     + r" \\")
        lines.append("".join(rf"\cmidrule(lr){{{1 + n_ident + i * k}-{n_ident + (i + 1) * k}}}"
                             for i in range(len(cols))))
        lines.append(ident + " & " + " & ".join(subs * len(cols)) + r" \\")
    elif spec.columns is not None:
        lines.append(ident + " & " + " & ".join(groups) + r" \\")
    else:
        lines.append(ident + " & " + " & ".join(subs) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(r) + r" \\" for r in matrix(layout, rows, cols, grid, latex=True)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)
