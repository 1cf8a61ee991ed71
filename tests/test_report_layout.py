"""Report pages a researcher reads in a minute (issue 28): a 90-model suite's page fits 1,400 px in width and
stays under 6,000 px in height, grouped by table row; plots with plain log ticks and legends beside the data;
provenance says only what is known."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from browser import measure
from conftest import REPO

SUITE = REPO / "benchmarks" / "data_value_cpu_digits.yaml"  # 90 models, an 18-column table
RESULTS = REPO / "results" / "data_value_cpu_digits"


class FakeStore:
    """Every stage done, with a sample grid and a loss log written by the test (no model is trained)."""

    def __init__(self, root):
        self.root = root

    def state(self, kind, key):
        return "done"

    def dir(self, kind, key):
        return self.root / kind / key


@pytest.fixture(scope="module")
def page_of_90_models(tmp_path_factory):
    from PIL import Image

    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.runner import build_graph
    from ambient_bench.results.collect import read_results
    from ambient_bench.results.report import write_report

    tmp = tmp_path_factory.mktemp("report90")
    suite = load_suite(SUITE)
    graph = build_graph(suite)
    store = FakeStore(tmp / "runs")
    rng = np.random.default_rng(0)
    for stages in graph.cells:
        grid = store.dir("sample", stages["sample"].key)
        grid.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(grid / "samples.png")
        log = store.dir("train", stages["train"].key)
        log.mkdir(parents=True, exist_ok=True)
        loss = 1.0 + rng.random()
        log.joinpath("stats.jsonl").write_text("".join(json.dumps({"kimg": k, "loss": loss / (1 + k)}) + "\n"
                                                       for k in range(0, 33, 4)))
    results = tmp / "results"
    shutil.copytree(RESULTS / "figures", results / "figures")
    page = write_report(suite, graph, store, results, read_results(RESULTS))
    return page


def test_a_90_model_page_fits_the_width_and_stays_under_6000_px(page_of_90_models):
    layout, console = measure(page_of_90_models, width=1400)
    assert layout["scrollWidth"] <= 1400 and layout["scrollWidth"] <= layout["clientWidth"], layout
    assert layout["overflowing"] == [], layout  # only scroll containers may hold something wider
    assert layout["height"] < 6000, layout
    assert layout["images"] >= 90 + 2 and layout["broken"] == 0, layout
    assert not console, console


def test_samples_curves_and_figures_are_grouped_by_table_row(page_of_90_models):
    text = page_of_90_models.read_text()
    folder = page_of_90_models.parent / "report"
    assert len(list(folder.glob("samples_*.png"))) == 90
    assert text.count("<details open><summary>Only clean") == 1 and "<details><summary>Filter + fine-tune" in text
    assert "n_clean = 25 · seed 0" in text  # a sample captioned by its column and seed within its row
    curves = json.loads((folder / "training_loss.json").read_text())
    assert len(curves) == 90 and {c["group"] for c in curves} >= {"Only clean", "Filter + fine-tune"}
    assert {c["label"] for c in curves} >= {"n_clean = 25", "n_clean = 800"}
    captions = [line for line in text.splitlines() if "<figcaption>" in line and "figures/annotate-" in line]
    assert captions and not any("annotate-" in c.split("<figcaption>")[1] for c in captions)
    assert any("classifier curves · n_clean = 25 · seeds 0, 1, 2" in c for c in captions)


def test_a_regenerated_page_keeps_sample_grids_the_store_no_longer_holds(page_of_90_models, tmp_path):
    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.runner import build_graph
    from ambient_bench.results.collect import read_results
    from ambient_bench.results.report import write_report

    class EmptyStore(FakeStore):
        def state(self, kind, key):
            return "missing"

    results = page_of_90_models.parent
    write_report(load_suite(SUITE), build_graph(load_suite(SUITE)), EmptyStore(tmp_path), results,
                 read_results(RESULTS))
    assert len(list((results / "report").glob("samples_*.png"))) == 90
    assert (results / "report" / "training_loss.png").is_file()  # redrawn from training_loss.json
    assert not (results / ".report.previous").exists()


def test_log_axes_are_labelled_with_plain_numbers_and_legends_sit_beside_the_data(tmp_path):
    from test_tables import SPEC, frame

    import matplotlib.pyplot as plt

    from ambient_bench.results.report_plots import plain_log_axis

    fig, ax = plt.subplots()
    ax.plot([25, 50, 100, 200, 400, 800], [570, 202, 192, 148, 148, 120])
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_axis(ax.xaxis, [25, 50, 100, 200, 400, 800])
    plain_log_axis(ax.yaxis)
    fig.canvas.draw()
    x_labels = [t.get_text() for t in ax.get_xticklabels()]
    y_labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    minor = [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text()]
    plt.close(fig)
    assert x_labels == ["25", "50", "100", "200", "400", "800"]
    assert y_labels and not minor and not any("10^" in t or "×" in t or "$" in t for t in y_labels)

    import matplotlib

    from ambient_bench.results import report_plots
    from ambient_bench.results.tables import load_spec

    drawn = []
    real_savefig = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        fig.canvas.draw()
        ax = fig.axes[0]
        drawn.append((ax.get_legend().get_window_extent().x0, ax.get_window_extent().x1))
        return real_savefig(fig, *args, **kwargs)

    matplotlib.figure.Figure.savefig = keep
    try:
        plots = report_plots.metric_plots(frame(), load_spec(SPEC), tmp_path)
    finally:
        matplotlib.figure.Figure.savefig = real_savefig
    assert plots and drawn and all(legend_left >= axes_right for legend_left, axes_right in drawn)


def test_provenance_shows_only_what_is_known():
    from ambient_bench.results.report import provenance_table

    old = "unknown (stage finished before provenance was recorded)"
    none = provenance_table(pd.DataFrame({"code_version": [old] * 3, "git_commit": [old] * 3, "value": [1, 2, 3]}))
    assert none.startswith("<p>Provenance not recorded") and "unknown" not in none
    assert provenance_table(pd.DataFrame({"value": [1]})).startswith("<p>Provenance not recorded")
    some = provenance_table(pd.DataFrame({"code_version": ["0.1.0", "0.1.0", old], "cuda": [old] * 3,
                                          "git_commit": ["abc", old, old]}))
    assert "abc" in some and "cuda" not in some and "unknown" not in some and "1 more result rows" in some
