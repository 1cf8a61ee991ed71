"""Write a suite's tables (Markdown + LaTeX) from its long-form results, with footnotes and
the paper's numbers; ``check`` compares against the files on disk instead of writing, and holds
a table whose paper status is ``reproduced`` to the reference's tolerances."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from ambient_bench import fileio
from ambient_bench.results.default_table import DEFAULT_ID, absent_quantities, table_specs
from ambient_bench.results.reference import RefTable, canonical
from ambient_bench.results.stats import is_nonnegative
from ambient_bench.results.layout import Layout, label_cells, to_latex, to_markdown
from ambient_bench.results.stats import ALPHA
from ambient_bench.results.tables import (SEED_KEY, Cell, TableSpec, aggregate, flat_config, lookup,
                                          matches, row_id, sort_rows, value_key)
from ambient_bench.results.verdicts import ONE_SEED, table_verdicts

TINY_NOTE = ("Tiny profile (`--profile tiny`): every size shrunk by the rules in ambient_bench/config/profiles.py "
             "(same stages, same code); the numbers exercise the machinery and say nothing about the method.")
STANDIN_NOTE = ("STAND-IN DATA: synthetic images in the real datasets' file formats (written by "
                "`python -m ambient_bench standins`), not the paper's datasets.")


def _unique(df: pd.DataFrame, column: str) -> list[str]:
    return sorted({str(v) for v in df[column].dropna()}) if column in df.columns else []


def profile_of(df: pd.DataFrame) -> str:
    """'tiny' when any result row comes from the tiny profile, else 'full' (results before profiles: full)."""
    return "tiny" if "tiny" in _unique(df, "profile") else "full"


def _uses_standins(df: pd.DataFrame) -> bool:
    return "True" in _unique(df, "standin_data")


def footnote(df: pd.DataFrame, spec: TableSpec) -> list[str]:
    quantities = [v["quantity"] for v in spec.values]
    shown = df[df["quantity"].isin(quantities)]
    lines = []
    if profile_of(df) == "tiny":
        lines.append(TINY_NOTE)
    if _uses_standins(shown):
        lines.append(STANDIN_NOTE)
    datasets, hashes = _unique(shown, "dataset"), _unique(shown, "dataset_hash")
    fractions = _unique(shown, "clean_fraction")
    counts = _unique(shown, "folder_counts")  # the user's folders: the folders say what is good
    lines.append(f"Data: {' / '.join(datasets)} (content sha256 {' / '.join(h[:12] for h in hashes)}…), "
                 + (f"{' / '.join(counts)}." if counts else f"clean fraction {' / '.join(fractions)}."))
    lines.append(f"Samples: {' / '.join(_unique(shown, 'num_samples'))} per model, "
                 f"{' / '.join(_unique(shown, 'sampler'))}; checkpoint: {' / '.join(_unique(shown, 'checkpoint'))}.")
    described: set[str] = set()
    for value in spec.values:
        rows = shown[shown["quantity"] == value["quantity"]]
        extractors, impls = _unique(rows, "feature_extractor"), _unique(rows, "implementation")
        if extractors and value["where"]:  # several columns of one quantity: described once, by its name
            if value["quantity"] not in described:
                described.add(value["quantity"])
                lines.append(f"{value['quantity']}: {' / '.join(extractors)}; computed with {' / '.join(impls)}.")
        elif extractors:
            lines.append(f"{value['label']}: {' / '.join(extractors)}; computed with {' / '.join(impls)}.")
        elif value["quantity"] == "sigma_min_mean":
            lines.append(f"{value['label']}: mean annotation sigma_min over the corrupted samples a method "
                         f"trains on (– = it trains on none).")
        elif value["quantity"] == "sigma_max_mean":
            lines.append(f"{value['label']}: mean annotation sigma_max over the out-of-distribution samples a "
                         f"method uses at low noise only (– = none).")
    classifiers = _unique(shown, "classifier")
    if classifiers:
        lines.append("Noise classifier (class-balanced loss; ROC-AUC on held-out images): " + " / ".join(classifiers)
                     + ".")
    dropped = _dropped(shown, spec)
    if dropped:
        lines.append("Low-quality images the annotation dropped (trusted at no noise level): " + "; ".join(dropped)
                     + ".")
    if "implementation" in shown and shown["implementation"].astype(str).str.contains("bootstrap over the gen").any():
        lines.append("A cell with a single seed shows its metric's 95% bootstrap interval over the generated samples "
                     "(the reference fixed) in brackets; a cell with several seeds, the t-interval over seeds.")
    seeds = _unique(shown, SEED_KEY)
    lines.append(f"Mean over training seeds {{{', '.join(seeds)}}}, with its 95% t-interval in brackets where a cell "
                 f"has two seeds or more. Bold: the best value of a column and every value that a paired sign-flip "
                 f"permutation test over the shared seeds cannot tell from it at α = 0.05 (several in bold: not "
                 f"separable at these seeds; none: a single seed, no test).")
    positive = list(dict.fromkeys(v["label"] for v in spec.values if is_nonnegative(v["quantity"])))
    if positive and len(seeds) > 1:
        lines.append(f"{', '.join(positive)} cannot be negative: their interval over seeds is the log-scale "
                     f"t-interval (the t-interval of the log values, exponentiated: an interval for the geometric "
                     f"mean that never goes below zero; cut at zero where a value is 0).")
    paper = spec.paper_table()
    if spec.compare and paper is not None:
        tolerances = [f"{v['label']} ±{paper.quantities[v['paper']]['tolerance']:g}" for v in spec.values
                      if v["paper"] and paper.quantities[v["paper"]]["tolerance"] is not None]
        if profile_of(df) == "tiny":
            lines.append("paper: the paper's number for the same configuration, for the layout only (tiny profile: "
                         "no comparison).")
        else:
            lines.append("paper: the paper's number for the same configuration; Δ = ours − paper, ✓ within the "
                         f"reference tolerance ({', '.join(tolerances) or 'none set'}), ✗ outside it.")
    return lines + list(spec.notes)


def _dropped(df: pd.DataFrame, spec: TableSpec) -> list[str]:
    """'<row>: 12 of 1,080' for every row (and column group) whose method uses low-quality images."""
    if "low_quality_dropped" not in df.columns:
        return []
    found: dict[str, set[str]] = {}
    for record in df.to_dict("records"):
        if not isinstance(record.get("low_quality_dropped"), str):
            continue
        config = flat_config(record)
        name = ", ".join(label_cells(spec, row_id(config, spec), None))
        if spec.columns:
            name += f" ({spec.columns['label'].format(config.get(spec.columns['key']))})"
        found.setdefault(name, set()).add(record["low_quality_dropped"])
    return [f"{name}: {' / '.join(sorted(counts))}" for name, counts in found.items()]


def _delta_fmt(fmt: str) -> str:
    return fmt.replace("{:", "{:+", 1)


def comparisons(df: pd.DataFrame, spec: TableSpec, rows: list, cols: list, grid: dict,
                configs: dict) -> list[tuple[tuple, object, dict, float, float, float | None]]:
    """(row, col, value entry, ours, paper, tolerance) for every cell with both numbers."""
    paper = spec.paper_table()
    if paper is None:
        return []
    out = []
    for (row, col), config in _cells(configs):
        for value in spec.values:
            ref = paper.lookup(configs.get((row, col, value_key(value)), config))
            if ref is None:
                continue
            number = ref.values.get(value["paper"]) if value["paper"] else None
            cell = grid.get((row, col, value_key(value)))
            if number is None or cell is None or math.isnan(cell[0]):
                continue
            out.append((row, col, value, cell[0], number, paper.quantities[value["paper"]]["tolerance"]))
    return out


def _cells(configs: dict) -> list[tuple[tuple, dict]]:
    """((row, col), config) of every table cell (a where-filtered column's own configs are keyed by three)."""
    return [(key, config) for key, config in configs.items() if len(key) == 2]


def _paper_column(df: pd.DataFrame, spec: TableSpec, rows: list, cols: list, grid: dict,
                  configs: dict) -> dict[tuple, str]:
    paper = spec.paper_table()
    text: dict[tuple, str] = {}
    full = profile_of(df) == "full"
    for (row, col), config in _cells(configs):
        for value in spec.values:
            ref = paper.lookup(configs.get((row, col, value_key(value)), config))
            number = ref.values.get(value["paper"]) if ref is not None and value["paper"] else None
            if number is not None:
                text[(row, col, value_key(value))] = paper.quantities[value["paper"]]["fmt"].format(number)
    if full:
        for row, col, value, ours, number, tolerance in comparisons(df, spec, rows, cols, grid, configs):
            fmt = paper.quantities[value["paper"]]["fmt"]
            mark = "" if tolerance is None else (" ✓" if abs(ours - number) <= tolerance else " ✗")
            text[(row, col, value_key(value))] += f" (Δ {_delta_fmt(fmt).format(ours - number)}{mark})"
    return text


def _reference_block(spec: TableSpec, cols: list) -> tuple[str, str] | None:
    paper = spec.paper_table()
    if paper is None:
        return None
    # The spec's layout and highlighting; the paper's quantity names, labels, precision and row names.
    values = [{**v, "quantity": v["paper"], "fmt": paper.quantities[v["paper"]]["fmt"],
               **({} if v["group"] else {"label": paper.quantities[v["paper"]]["label"],  # grouped: the spec's
                                         "latex": paper.quantities[v["paper"]]["latex"]})}
              for v in spec.values if v["paper"]]
    col_key = spec.columns["key"] if spec.columns else None
    grid, labels = {}, {}
    for ref in paper.rows:
        row = row_id(ref.match, spec)
        wanted = lookup(ref.match, col_key) if col_key else None
        for col in cols:
            if wanted is not None and canonical(col) != canonical(wanted):
                continue
            filtered = [v for v in values if v["where"]]
            for quantity, number in ref.values.items():
                if number is not None and not filtered:
                    grid[(row, col, quantity)] = Cell(number, math.nan, 1)
            for value in filtered:  # a where column takes the paper row of that setting
                number = ref.values.get(value["quantity"])
                if number is not None and matches(ref.match, value["where"]):
                    grid[(row, col, value_key(value))] = Cell(number, math.nan, 1)
            labels.setdefault(row, ref.label)
    layout = Layout(spec=dataclasses.replace(spec, values=values), values=values, row_labels=labels,
                    significance=False)
    rows = sort_rows(list(labels), spec)
    caption = f"{paper.source}, {paper.caption}. Status in ambient_bench: {paper.status_text}."
    return (caption + "\n\n" + to_markdown(layout, rows, cols, grid),
            "% " + caption + "\n" + to_latex(layout, rows, cols, grid))


def render(df: pd.DataFrame, spec: TableSpec) -> dict[str, str]:
    """{'md': ..., 'tex': ...} for one table spec."""
    rows, cols, grid, configs = aggregate(df, spec)
    paper_text = _paper_column(df, spec, rows, cols, grid, configs) if spec.compare and spec.reference else None
    layout = Layout(spec=spec, values=spec.values, paper=paper_text)
    notes = footnote(df, spec)
    verdicts = table_verdicts(spec, rows, cols, grid)
    md = [f"# {spec.title}", "", to_markdown(layout, rows, cols, grid), ""]
    md += [f"**Warning**: column '{v['label']}' is empty: no result has {v['quantity']}; the default table "
           f"{DEFAULT_ID}.md shows the metrics computed.\n" for v in absent_quantities(df, spec)]
    if verdicts == [ONE_SEED]:
        md += [ONE_SEED, ""]
    elif verdicts:
        md += [f"**Verdicts** (paired over training seeds, α = {ALPHA}):", ""] + [f"- {v}" for v in verdicts] + [""]
    md += [f"- {n}" for n in notes]
    tex = [f"% {spec.title} (generated by `python -m ambient_bench tables`; do not edit)",
           to_latex(layout, rows, cols, grid)] + [f"% {n}" for n in notes]
    reference = _reference_block(spec, cols)
    if reference is not None:
        md += ["", "## The paper's numbers (same layout)", "", reference[0]]
        tex += ["", reference[1]]
    return {"md": "\n".join(md) + "\n", "tex": "\n".join(tex) + "\n"}


def status_problems(df: pd.DataFrame, spec: TableSpec) -> list[str]:
    """Where the reference's status and our full-profile numbers disagree (nothing to say for tiny runs)."""
    paper: RefTable | None = spec.paper_table()
    if not spec.compare or paper is None or profile_of(df) != "full":
        return []
    rows, cols, grid, configs = aggregate(df, spec)
    found = comparisons(df, spec, rows, cols, grid, configs)
    problems = []
    where = f"{paper.path}: table {paper.id}"
    if found and paper.status in ("not-run", "not-supported", "different-protocol"):
        problems.append(f"{where} has status {paper.status} but {spec.id} compares {len(found)} numbers with it; "
                        f"set status: reproduced or not-reproduced")
    if paper.status == "reproduced":
        for row, col, value, ours, number, tolerance in found:
            if tolerance is not None and abs(ours - number) > tolerance:
                problems.append(f"{where} says reproduced, but {value['paper']} of "
                                f"{'/'.join(v for v in row if v)}{'' if col is None else f' at {col}'} is "
                                f"{ours:.4g} vs the paper's {number:.4g} (tolerance {tolerance:g})")
    return problems


def render_all(df: pd.DataFrame, spec_paths: list[Path], results_dir: Path, check: bool = False) -> list[Path | str]:
    """Write (or, with ``check``, compare) every table; returns the paths written, or with ``check`` the
    stale paths and the status problems found. Without specs, or when a spec's metric column has no value
    in the results (said loudly, on stderr and in the table), the default table of methods × metrics too."""
    touched: list[Path | str] = []
    specs = table_specs(df, spec_paths, warn=not check)
    for spec in specs:
        for ext, text in render(df, spec).items():
            path = Path(results_dir) / f"{spec.id}.{ext}"
            if check:
                if not path.is_file() or path.read_text(encoding="utf-8") != text:
                    touched.append(path)
            else:
                fileio.write_text(path, text)
                touched.append(path)
        if check:
            touched += status_problems(df, spec)
    return touched
