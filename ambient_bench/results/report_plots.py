"""The report page's plots (matplotlib, Agg): each table metric against the column axis, and the training
curves, one panel per table row. Sized to their data, plain tick numbers on log axes (no overlapping
"3×10¹4×10¹" minor labels), legends beside the axes so they cover no curve or error bar."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from ambient_bench.results.layout import label_cells
from ambient_bench.results.tables import TableSpec, aggregate, value_key

REPORT_DIR = "report"
DPI = 110
WIDE_PX = 700  # plots wider than this span both columns of the page's plot grid
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 7, "frameon": False, "borderaxespad": 0}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def as_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def plain_log_axis(axis: Any, ticks: list[float] | None = None) -> None:
    """A log axis labelled with plain numbers (25, 50, 100 or 10, 20, 50): major ticks at ``ticks`` (the
    data's own values) or at 1-2-5 steps, no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if ticks:
        axis.set_ticks(sorted(set(ticks)))
    else:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.4g}"))
    axis.set_minor_formatter(NullFormatter())


def _file_name(*parts: str) -> str:
    name = "_".join(p.replace("@", "_").replace("/", "_") for p in parts)
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name) + ".png"


def metric_plots(df: pd.DataFrame, spec: TableSpec, folder: Path,
                 aggregated: tuple | None = None) -> list[dict[str, str]]:
    """One PNG per value with a direction (a metric): mean against the column axis with its interval band
    (the paper's Fig. 3 idea); without a numeric column axis, one bar per row with its interval.
    ``aggregated``: ``aggregate(df, spec)`` when the caller has it already (seconds on a 90-model suite)."""
    from ambient_bench.results.stats import is_nonnegative

    plt = _pyplot()
    rows, cols, grid, _ = aggregated or aggregate(df, spec)
    numeric = spec.columns is not None and len(cols) > 1 and all(as_number(c) is not None for c in cols)
    out = []
    for value in spec.values:
        if value["better"] is None:
            continue
        key = value_key(value)
        width = 4.4 if numeric else min(9.0, max(4.0, 2.0 + 0.3 * len(rows) * len(cols)))
        fig, ax = plt.subplots(figsize=(width, 3.0))
        drawn, values = False, []
        for i, row in enumerate(rows):
            label = " / ".join(label_cells(spec, row, None))
            cells = [(c, grid.get((row, c, key))) for c in cols]
            cells = [(c, cell) for c, cell in cells if cell is not None and not math.isnan(cell.mean)]
            if not cells:
                continue
            drawn = True
            values.extend(cell.mean for _, cell in cells)
            if numeric:
                x = [float(c) for c, _ in cells]
                line, = ax.plot(x, [cell.mean for _, cell in cells], marker="o", markersize=3, label=label)
                bands = [(xx, cell.interval) for xx, (_, cell) in zip(x, cells) if cell.interval is not None]
                if bands:
                    ax.fill_between([b[0] for b in bands], [b[1][0] for b in bands], [b[1][1] for b in bands],
                                    color=line.get_color(), alpha=0.15)
            else:  # grouped bars: one group per column value, one bar per row
                bar = 0.8 / max(1, len(rows))
                xs = [cols.index(c) - 0.4 + (i + 0.5) * bar for c, _ in cells]
                errors = [[0.0, 0.0] if cell.interval is None else
                          [cell.mean - cell.interval[0], cell.interval[1] - cell.mean] for _, cell in cells]
                ax.bar(xs, [cell.mean for _, cell in cells], width=bar, yerr=list(zip(*errors)), capsize=2,
                       label=label, color=f"C{i % 10}")
        if not drawn:
            plt.close(fig)
            continue
        title = " · ".join([*value["group"], value["label"]])
        ax.set_ylabel(f"{title}\n({'lower' if value['better'] == 'lower' else 'higher'} is better)", fontsize=8)
        if numeric:
            ax.set_xlabel(spec.columns["label"].replace("{}", "").strip(" =:") or spec.columns["key"], fontsize=8)
            xs = [float(c) for c in cols]
            if min(xs) > 0 and max(xs) / min(xs) >= 16:  # a log grid (data sizes) on a log axis
                ax.set_xscale("log")
                plain_log_axis(ax.xaxis, xs)
        else:
            ax.set_xticks(range(len(cols)))
            ax.set_xticklabels([spec.columns["label"].format(c) if spec.columns else "" for c in cols], fontsize=7)
        if values and min(values) > 0 and max(values) / min(values) > 30:  # one scale for 70 and 7,000
            ax.set_yscale("log")
            plain_log_axis(ax.yaxis)
        ax.tick_params(labelsize=7)
        ax.legend(**LEGEND)
        kind = "log-scale t-interval" if is_nonnegative(value["quantity"]) else "t-interval"
        ax.set_title(f"{spec.id}: {title} (bands / bars: 95% {kind} over seeds)", fontsize=8)
        name = _file_name(spec.id, key)
        fig.savefig(folder / name, dpi=DPI, bbox_inches="tight", pad_inches=0.05)
        plt.close(fig)
        with Image.open(folder / name) as image:  # wider than half the page: it gets a line of its own
            wide = image.width > WIDE_PX
        out.append({"src": f"{REPORT_DIR}/{name}", "wide": wide, "alt": f"{title} against "
                    + (spec.columns["key"] if numeric else "the rows")})
    return out


def read_losses(stats: Path) -> list[tuple[float, float]]:
    """(kimg, loss) points of a training stage's stats.jsonl; [] when it logged none. A line that is not a JSON
    object with numeric kimg and loss (the half-written last line of a training still running, a damaged file) is
    skipped: the curve is a picture, never a reason for ``report`` to fail."""
    if not stats.is_file():
        return []
    points = []
    for line in stats.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            p = json.loads(line)
            points.append((float(p["kimg"]), float(p["loss"])))
        except (ValueError, TypeError, KeyError):
            continue
    return points


def loss_curves(groups: list[tuple[str, list[tuple[str, list[tuple[float, float]]]]]], path: Path) -> bool:
    """Training loss against kimg: one panel per group (a table row), titled by it, one line per trained model
    labelled by what tells it apart in the group (the column and seed); models with the same label (seeds of
    one cell) share a colour and a legend entry. False when no model logged its loss."""
    groups = [(title, [(label, points) for label, points in lines if points]) for title, lines in groups]
    groups = [(title, lines) for title, lines in groups if lines]
    if not groups:
        return False
    plt = _pyplot()
    columns = min(3, len(groups))
    panel_rows = math.ceil(len(groups) / columns)
    fig, axes = plt.subplots(panel_rows, columns, figsize=(4.6 * columns, 2.6 * panel_rows), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, (title, lines) in zip(axes.flat, groups):
        colours: dict[str, str] = {}
        for label, points in lines:
            first = label not in colours
            colours.setdefault(label, f"C{len(colours) % 10}")
            ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=0.8, color=colours[label],
                    label=label if first else None)
        ax.set_title(title, fontsize=8)
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("training images (kimg)", fontsize=7)
        if len(colours) > 1 or next(iter(colours)) != "":
            ax.legend(**{**LEGEND, "fontsize": 6}, ncols=1 if len(colours) <= 8 else 2)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("loss (batch mean)", fontsize=7)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True
