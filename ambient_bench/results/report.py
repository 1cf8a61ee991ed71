"""A suite's report page: ``results/<suite>/index.html``, static, opened from disk.

It shows the suite's tables (the same rendering as ``tables``: intervals, significance, the paper's
numbers and status), one plot per table and metric of the metric against the column axis with its
95% interval band, the first samples of every model (same seeds across models), the training-loss
curves, the annotation figures, and the provenance of the numbers. Images are PNG files in
``report/`` beside the page (matplotlib, Agg); the page is a Jinja2 template.
"""
from __future__ import annotations

import html
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ambient_bench import fileio
from ambient_bench.results.render import render
from ambient_bench.results.layout import label_cells
from ambient_bench.results.tables import TableSpec, aggregate, load_spec, value_key

REPORT_DIR = "report"


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


def _as_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_plots(df: pd.DataFrame, spec: TableSpec, folder: Path) -> list[dict[str, str]]:
    """One PNG per value with a direction (a metric): mean against the column axis with its interval band
    (the paper's Fig. 3 idea); without a numeric column axis, one bar per row with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols, grid, _ = aggregate(df, spec)
    numeric = spec.columns is not None and len(cols) > 1 and all(_as_number(c) is not None for c in cols)
    out = []
    for value in spec.values:
        if value["better"] is None:
            continue
        key = value_key(value)
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        drawn, values = False, []
        for i, row in enumerate(rows):
            label = " / ".join(label_cells(spec, row, None))
            cells = [(c, grid.get((row, c, key))) for c in cols]
            cells = [(c, cell) for c, cell in cells if cell is not None and not math.isnan(cell.mean)]
            if not cells:
                continue
            drawn = True
            if numeric:
                x = [float(c) for c, _ in cells]
                y = [cell.mean for _, cell in cells]
                line, = ax.plot(x, y, marker="o", label=label)
                bands = [(xx, cell.interval) for xx, (_, cell) in zip(x, cells) if cell.interval is not None]
                if bands:
                    ax.fill_between([b[0] for b in bands], [b[1][0] for b in bands], [b[1][1] for b in bands],
                                    color=line.get_color(), alpha=0.15)
            else:  # grouped bars: one group per column value, one bar per row
                width = 0.8 / max(1, len(rows))
                xs = [cols.index(c) - 0.4 + (i + 0.5) * width for c, _ in cells]
                errors = [[0.0, 0.0] if cell.interval is None else
                          [cell.mean - cell.interval[0], cell.interval[1] - cell.mean] for _, cell in cells]
                ax.bar(xs, [cell.mean for _, cell in cells], width=width, yerr=list(zip(*errors)), capsize=2,
                       label=label, color=f"C{i % 10}")
                values.extend(cell.mean for _, cell in cells)
        if not drawn:
            plt.close(fig)
            continue
        title = " · ".join([*value["group"], value["label"]])
        ax.set_ylabel(f"{title} ({'lower' if value['better'] == 'lower' else 'higher'} is better)")
        if numeric:
            ax.set_xlabel(spec.columns["label"].replace("{}", "").strip(" =:") or spec.columns["key"])
            xs = [float(c) for c in cols]
            if min(xs) > 0 and max(xs) / min(xs) >= 16:  # a log grid (data sizes) on a log axis
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(cols)))
            ax.set_xticklabels([spec.columns["label"].format(c) if spec.columns else "" for c in cols], fontsize=7)
            if values and min(values) > 0 and max(values) / min(values) > 30:  # one scale for 70 and 7,000
                ax.set_yscale("log")
        ax.legend(fontsize=7, loc="best")
        ax.set_title(f"{spec.id}: {title} (bands / bars: 95% t-interval over seeds)", fontsize=9)
        fig.tight_layout()
        name = f"{spec.id}_{key.replace('@', '_').replace('/', '_')}"
        name = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name) + ".png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        out.append({"src": f"{REPORT_DIR}/{name}", "alt": f"{title} against "
                    + (spec.columns["key"] if numeric else "the rows")})
    return out


def loss_curves(cells: list[tuple[str, Path]], path: Path) -> bool:
    """Loss against kimg from each trained model's stats.jsonl, one line per cell; False when none logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    drawn = 0
    for label, stats in cells:
        if not stats.is_file():
            continue
        points = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
        points = [p for p in points if "loss" in p and "kimg" in p]
        if points:
            ax.plot([p["kimg"] for p in points], [p["loss"] for p in points], label=label, linewidth=1)
            drawn += 1
    if drawn:
        ax.set_xlabel("training images (kimg)")
        ax.set_ylabel("loss (per-sample, mean over the batch)")
        ax.set_yscale("log")
        if drawn <= 12:
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return bool(drawn)


def paired_comparisons(df: pd.DataFrame, spec: TableSpec) -> str:
    """HTML: in every column, each row against the column's best, paired over their shared seeds (mean
    difference, sign-flip permutation p-value, effect size d_z); '' when no pair has two seeds."""
    from ambient_bench.results.stats import paired_test

    rows, cols, grid, _ = aggregate(df, spec)
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
    columns = [c for c in ("code_version", "git_commit", "git_dirty", "torch", "cuda", "device") if c in df.columns]
    if not columns:
        return "<p>These results predate provenance recording.</p>"
    counts = df[columns].astype(str).value_counts().reset_index(name="result rows")
    return counts.to_html(index=False, escape=True, border=0)


def write_report(suite: Any, graph: Any, store: Any, results_dir: Path, df: pd.DataFrame) -> Path:
    """Write ``results_dir/index.html`` and its images in ``results_dir/report/``; returns the page."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    results_dir = Path(results_dir)
    folder = results_dir / REPORT_DIR
    if folder.exists():
        shutil.rmtree(folder)  # only what this run draws: no stale images of removed cells
    folder.mkdir(parents=True)
    tables = []
    for spec_path in suite.tables:
        spec = load_spec(spec_path)
        md = render(df, spec)["md"]
        ours, _, paper = md.partition("## The paper's numbers (same layout)")
        paper_caption = next((line for line in paper.splitlines() if line and not line.startswith("|")), "")
        tables.append({"id": spec.id, "title": spec.title, "html": markdown_table_to_html(ours),
                       "paired": _markup(paired_comparisons(df, spec)),
                       "notes": _notes(md), "plots": metric_plots(df, spec, folder),
                       "paper_html": markdown_table_to_html(paper), "paper_caption": paper_caption})
    samples, trained, seen = [], [], set()
    for cell, stages in zip(suite.cells, graph.cells):
        sample, train = stages.get("sample"), stages.get("train")
        if sample is not None and store.state("sample", sample.key) == "done":
            grid = store.dir("sample", sample.key) / "samples.png"
            if grid.is_file():
                name = f"samples_{sample.key[:12]}.png"
                shutil.copyfile(grid, folder / name)
                samples.append({"src": f"{REPORT_DIR}/{name}", "label": cell.label})
        if train is not None and train.key not in seen:
            seen.add(train.key)
            trained.append((cell.label, store.dir("train", train.key) / "stats.jsonl"))
    curves = f"{REPORT_DIR}/training_loss.png" if loss_curves(trained, folder / "training_loss.png") else None
    figures = [{"src": p.relative_to(results_dir).as_posix(), "alt": f"{p.parent.name}: {p.stem.replace('_', ' ')}"}
               for p in sorted((results_dir / "figures").glob("*/*.png"))]
    env = Environment(loader=PackageLoader("ambient_bench.results", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("report.html.j2").render(
        suite=suite.name, description=getattr(suite, "description", "") or "",
        tables=[{**t, "html": _markup(t["html"]), "paper_html": _markup(t["paper_html"])} for t in tables],
        samples=samples, curves=curves, figures=figures, provenance=_markup(provenance_table(df)))
    path = results_dir / "index.html"
    fileio.write_text(path, page)
    return path


def _markup(text: str) -> Any:
    from markupsafe import Markup

    return Markup(text)  # built here from escaped cells
