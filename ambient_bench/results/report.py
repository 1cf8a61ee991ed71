"""A suite's report page: ``results/<suite>/index.html``, static, opened from disk.

It shows the suite's tables (the same rendering as ``tables``: intervals, significance, the paper's
numbers and status), one plot per table and metric of the metric against the column axis with its
95% interval band, the first samples of every model (same seeds across models), the training-loss
curves, the annotation figures, and the provenance of the numbers. Samples, curves and annotation
figures are grouped by the row of the suite's first table they belong to (a method, a cell group),
the first groups open and the rest folded, so a 90-model suite reads in one screenful per section.
Images are PNG files in ``report/`` beside the page (``report_plots``); the page is a Jinja2 template.
A sample grid or loss log the run store no longer holds is kept from the previous page when its
stage key is the same (results regenerated from a committed ``results.csv`` without the runs).
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from ambient_bench import fileio
from ambient_bench.results.layout import label_cells
from ambient_bench.results.default_table import table_specs
from ambient_bench.results.render import render
from ambient_bench.results.report_plots import REPORT_DIR, as_number, loss_curves, metric_plots, read_losses
from ambient_bench.results.tables import TableSpec, aggregate, flat_config, row_id, sort_rows, value_key

OPEN_GROUPS = 2  # sample and figure groups shown unfolded; the rest are one click away
PROVENANCE_COLUMNS = ("code_version", "git_commit", "git_dirty", "torch", "cuda", "device")
PROVENANCE_SINCE = "2026-12-04 (commit 1ccf361)"  # when stages began to record what computed them


def markdown_table_to_html(text: str) -> str:
    """The GitHub-style tables our renderer writes → HTML (bold kept); other lines are dropped."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    if len(lines) < 2:
        return ""

    def cells(line: str) -> list[str]:
        out = []
        for cell in line.strip().strip("|").split("|"):
            cell = html.escape(cell.strip())
            if cell.startswith("**") and cell.endswith("**"):
                cell = f"<b>{cell[2:-2]}</b>"
            out.append(cell)
        return out

    head = "".join(f"<th>{c}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells(line)) + "</tr>" for line in lines[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _notes(md: str) -> list[str]:
    ours = md.split("## The paper's numbers")[0]
    return [line[2:] for line in ours.splitlines() if line.startswith("- ")]


def paired_comparisons(df: pd.DataFrame, spec: TableSpec, aggregated: tuple | None = None) -> str:
    """HTML: in every column, each row against the column's best, paired over their shared seeds (mean
    difference, sign-flip permutation p-value, effect size d_z); '' when no pair has two seeds.
    ``aggregated``: ``aggregate(df, spec)`` when the caller has it already."""
    from ambient_bench.results.stats import paired_test

    rows, cols, grid, _ = aggregated or aggregate(df, spec)
    lines = []
    for value in spec.values:
        if value["better"] is None:
            continue
        key = value_key(value)
        for col in cols:
            cells = {r: grid[(r, col, key)] for r in rows if (r, col, key) in grid and grid[(r, col, key)].seeds}
            if len(cells) < 2:
                continue
            pick = min if value["better"] == "lower" else max
            best = pick(cells, key=lambda r: cells[r].mean)
            for row, cell in cells.items():
                shared = sorted(set(cell.seeds) & set(cells[best].seeds))
                if row == best or len(shared) < 2:
                    continue
                result = paired_test([cell.seeds[s] for s in shared], [cells[best].seeds[s] for s in shared])
                column = " · ".join(x for x in [*value["group"], value["label"],
                                                 "" if col is None else spec.columns["label"].format(col)] if x)
                lines.append({"column": column, "row": " / ".join(label_cells(spec, row, None)),
                              "best": " / ".join(label_cells(spec, best, None)), "seeds": len(shared),
                              "difference": f"{result.mean_difference:+.4g}", "p": f"{result.p_value:.3f}",
                              "d_z": f"{result.effect_size:.2f}"})
    if not lines:
        return ""
    return pd.DataFrame(lines).to_html(index=False, escape=True, border=0)


def provenance_table(df: pd.DataFrame) -> str:
    """What computed the numbers: the recorded fields only (a field unknown in every row is left out, and so
    are rows that recorded nothing, counted in a line); one line when nothing was recorded."""
    def unknown(column: pd.Series) -> pd.Series:
        text = column.astype(str)
        return column.isna() | text.str.startswith("unknown") | text.isin(["", "nan", "None"])

    columns = [c for c in PROVENANCE_COLUMNS if c in df.columns and not unknown(df[c]).all()]
    if not columns:
        return (f"<p>Provenance not recorded: these results come from stages that finished before "
                f"{PROVENANCE_SINCE}, when stages began to record it.</p>")
    recorded = ~pd.concat([unknown(df[c]) for c in columns], axis=1).all(axis=1)
    shown = pd.DataFrame({c: df[c].astype(str).mask(unknown(df[c]), "–") for c in columns})[recorded]
    counts = shown.value_counts().reset_index(name="result rows")
    text = f'<div class="scroll">{counts.to_html(index=False, escape=True, border=0)}</div>'
    if (~recorded).any():
        text += (f"<p>{int((~recorded).sum())} more result rows come from stages that finished before "
                 f"{PROVENANCE_SINCE} and recorded no provenance.</p>")
    return text


class Place(NamedTuple):
    """Where a cell sits in the suite's first table: its row (the group) and the row's rank, its column
    ('n_clean = 25', '' without a column axis), its seed ('seed 0') and a sort key within the row."""

    group: str
    rank: int
    column: str
    seed: str
    order: tuple

    @property
    def detail(self) -> str:
        return " · ".join(x for x in (self.column, self.seed) if x)


def _seed_text(record: dict[str, Any]) -> str:
    seed = as_number(record.get("train.seed"))
    return "" if seed is None else f"seed {seed:g}"


def cell_places(df: pd.DataFrame, spec: TableSpec | None) -> dict[str, Place]:
    """Cell label → Place, from each cell's configuration in the results; {} without a table or results."""
    if spec is None or df.empty or "cell" not in df.columns:
        return {}
    records = df.drop_duplicates("cell").to_dict("records")
    ids = {r["cell"]: row_id(flat_config(r), spec) for r in records}
    ranks = {row: i for i, row in enumerate(sort_rows(list(dict.fromkeys(ids.values())), spec))}
    places = {}
    for r in records:
        column = r.get(spec.columns["key"]) if spec.columns else None
        column = None if column is None or (isinstance(column, float) and column != column) else column
        text = spec.columns["label"].format(column) if column is not None else ""
        number = as_number(column)
        order = (number if number is not None else float("inf"), str(column), as_number(r.get("train.seed")) or 0)
        row = ids[r["cell"]]
        places[r["cell"]] = Place(" / ".join(label_cells(spec, row, None)), ranks[row], text, _seed_text(r), order)
    return places


def _place(places: dict[str, Place], label: str) -> Place:
    return places.get(label) or Place("cells without results", 10**6, label, "", (0.0, label, 0))


def _grouped(items: list[tuple[Place, dict[str, Any]]]) -> list[dict[str, Any]]:
    """[{title, open, items}] in table-row order, items ordered by column value then seed."""
    groups: dict[tuple[int, str], list] = {}
    for place, item in items:
        groups.setdefault((place.rank, place.group), []).append((place.order, item))
    ordered = sorted(groups.items(), key=lambda g: g[0])
    return [{"title": title, "open": i < OPEN_GROUPS, "items": [item for _, item in sorted(members, key=_first)]}
            for i, ((_, title), members) in enumerate(ordered)]


def _first(pair: tuple) -> Any:
    return pair[0]


def _sample_groups(suite: Any, graph: Any, store: Any, folder: Path, previous: Path,
                   places: dict[str, Place]) -> list[dict[str, Any]]:
    items = []
    for cell, stages in zip(suite.cells, graph.cells):
        sample = stages.get("sample")
        if sample is None:
            continue
        name = f"samples_{sample.key[:12]}.png"
        grid = store.dir("sample", sample.key) / "samples.png" if store.state("sample", sample.key) == "done" else None
        source = grid if grid is not None and grid.is_file() else previous / name
        if source.is_file():
            shutil.copyfile(source, folder / name)
            place = _place(places, cell.label)
            items.append((place, {"src": f"{REPORT_DIR}/{name}", "label": place.detail or cell.label,
                                  "title": cell.label}))
    return _grouped(items)


def _curves(suite: Any, graph: Any, store: Any, folder: Path, previous: Path,
            places: dict[str, Place]) -> dict[str, Any] | None:
    """Draw the loss curves per table row (their points kept in training_loss.json so a later page can redraw
    them without the run store); None when nothing logged its loss."""
    logged, seen = [], set()
    for cell, stages in zip(suite.cells, graph.cells):
        train = stages.get("train")
        if train is None or train.key in seen:
            continue
        seen.add(train.key)
        place = _place(places, cell.label)
        points = read_losses(store.dir("train", train.key) / "stats.jsonl")
        if points:
            logged.append({"group": place.group, "rank": place.rank, "label": place.column,
                           "order": list(place.order), "points": points})
    if not logged and (previous / "training_loss.json").is_file():
        logged = json.loads((previous / "training_loss.json").read_text())
    if logged:
        fileio.write_text(folder / "training_loss.json", json.dumps(logged))
        groups: dict[tuple[int, str], list] = {}
        for line in sorted(logged, key=lambda x: (x["rank"], x["group"], x["order"])):
            groups.setdefault((line["rank"], line["group"]), []).append((line["label"], line["points"]))
        if loss_curves([(title, lines) for (_, title), lines in groups.items()], folder / "training_loss.png"):
            return {"src": f"{REPORT_DIR}/training_loss.png", "previous": False}
    if (previous / "training_loss.png").is_file():  # a page drawn before the curves were grouped
        shutil.copyfile(previous / "training_loss.png", folder / "training_loss.png")
        return {"src": f"{REPORT_DIR}/training_loss.png", "previous": True}
    return None


def _figure_groups(suite: Any, graph: Any, results_dir: Path, places: dict[str, Place]) -> tuple[list, list]:
    """(suite-wide annotation figures, per-row groups of the per-stage ones captioned by their cells)."""
    figures = results_dir / "figures"
    overall = [{"src": p.relative_to(results_dir).as_posix(), "alt": p.stem.replace("_", " ")}
               for p in sorted(figures.glob("*.png"))]
    users: dict[str, list[str]] = {}
    for cell, stages in zip(suite.cells, graph.cells):
        annotate = stages.get("annotate")
        if annotate is not None:
            users.setdefault(f"annotate-{annotate.key[:16]}", []).append(cell.label)
    items = []
    for folder in sorted(p for p in figures.glob("*") if p.is_dir()):
        cells = users.get(folder.name, [])
        found = [_place(places, c) for c in cells]
        place = (min(found, key=lambda p: (p.rank, p.order)) if found
                 else Place(folder.name, 10**6, "", "", (0.0, "", 0)))
        columns = ", ".join(dict.fromkeys(p.column for p in found if p.column))
        seeds = [p.seed.removeprefix("seed ") for p in found if p.seed]
        seeds = ("seeds " if len(seeds) > 1 else "seed ") + ", ".join(dict.fromkeys(seeds)) if seeds else ""
        where = "".join(f" · {x}" for x in (columns, seeds) if x)
        for png in sorted(folder.glob("*.png")):
            name = png.stem.replace("_", " ")
            items.append((place._replace(order=(png.stem, *place.order)), {
                "src": png.relative_to(results_dir).as_posix(), "caption": name + where,
                "alt": f"{name}: {place.group}{where}", "kind": png.stem}))
    groups = _grouped(items)
    richest = sorted(range(len(groups)), key=lambda i: -len({f["kind"] for f in groups[i]["items"]}))
    for i, group in enumerate(groups):  # open the group showing the most kinds of figure
        group["open"] = i in richest[:1]
    return overall, groups


def write_report(suite: Any, graph: Any, store: Any, results_dir: Path, df: pd.DataFrame) -> Path:
    """Write ``results_dir/index.html`` and its images in ``results_dir/report/``; returns the page."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    results_dir = Path(results_dir)
    folder, previous = results_dir / REPORT_DIR, results_dir / f".{REPORT_DIR}.previous"
    if previous.exists():
        shutil.rmtree(previous)
    if folder.exists():
        folder.rename(previous)  # only what this run draws stays: no stale images of removed cells
    folder.mkdir(parents=True)
    try:
        specs = table_specs(df, suite.tables, warn=False)  # the default table where the suite names none
        tables = []
        for spec in specs:
            md = render(df, spec)["md"]
            ours, _, paper = md.partition("## The paper's numbers (same layout)")
            caption = next((line for line in paper.splitlines() if line and not line.startswith("|")), "")
            aggregated = aggregate(df, spec)
            tables.append({"id": spec.id, "title": spec.title, "html": _markup(markdown_table_to_html(ours)),
                           "paired": _markup(paired_comparisons(df, spec, aggregated)), "notes": _notes(md),
                           "plots": metric_plots(df, spec, folder, aggregated), "paper_caption": caption,
                           "paper_html": _markup(markdown_table_to_html(paper))})
        places = cell_places(df, specs[0] if specs else None)
        samples = _sample_groups(suite, graph, store, folder, previous, places)
        curves = _curves(suite, graph, store, folder, previous, places)
        overall, figure_groups = _figure_groups(suite, graph, results_dir, places)
    finally:
        if previous.exists():
            shutil.rmtree(previous)
    env = Environment(loader=PackageLoader("ambient_bench.results", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("report.html.j2").render(
        suite=suite.name, description=getattr(suite, "description", "") or "", tables=tables,
        samples=samples, sample_count=sum(len(g["items"]) for g in samples), curves=curves,
        overall_figures=overall, figure_groups=figure_groups, provenance=_markup(provenance_table(df)))
    path = results_dir / "index.html"
    fileio.write_text(path, page)
    return path

def _markup(text: str) -> Any:
    from markupsafe import Markup

    return Markup(text)  # built here from escaped cells
