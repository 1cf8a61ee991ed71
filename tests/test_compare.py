"""Your data, one command to an answer: `compare`, the default table, verdicts, spec columns that cannot be
filled, suite-relative paths and list overrides."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ambient_bench import UserError
from ambient_bench.config.suite import load_suite
from ambient_bench.results.default_table import check_specs
from ambient_bench.results.render import render_all
from ambient_bench.results.stats import SIGN_FLIP_MIN_SEEDS, seeds_for_power
from ambient_bench.results.verdicts import ONE_SEED, verdict

from conftest import REPO, run_cli


def write_folders(root: Path, good: int = 40, bad: int = 120, size: int = 32) -> tuple[Path, Path]:
    """Smooth colour waves (good) and the same with heavy pixel noise (bad), as PNG files."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for name, count in (("good", good), ("bad", bad)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            f, phase = rng.uniform(1, 3, 3), rng.uniform(0, 6.28, 3)
            image = np.stack([0.5 + 0.5 * np.sin(6.28 * f[c] * (xx + yy) + phase[c]) for c in range(3)], -1)
            if name == "bad":
                image = image + rng.normal(0, 0.3, image.shape)
            Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root / "good", root / "bad"


@pytest.mark.slow
def test_compare_ends_with_a_table_and_verdicts_in_one_command(tmp_path):
    good, bad = write_folders(tmp_path / "folders")
    results = tmp_path / "answer"
    proc = run_cli("compare", "--good", str(good), "--bad", str(bad), "--seeds", "2", "--runs", str(tmp_path / "runs"),
                   "--results", str(results), "--metric", "fd_bandpass", "--resolution", "8", "--samples", "32",
                   "--duration-kimg", "0.064", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "against the 40 good images" in out  # the reference the metric scores, not the whole pool
    table = out[out.index("# Methods × metrics"):]
    for method in ("Clean only", "All data", "Ambient-o"):
        assert f"| {method} " in table
    assert "fd_bandpass ↓" in table and "| –" not in table
    assert "Ambient-o vs Clean only:" in table and "2 seeds" in table
    assert "40 good, 120 bad, 0 out-of-distribution images" in table
    page = (results / "index.html").read_text()  # the report page shows the default table too
    assert "Methods × metrics" in page and "Ambient-o vs Clean only" in page
    suite = results / "suite.yaml"  # editable and runnable again: nothing re-runs
    assert suite.is_file()
    again = run_cli("run", str(suite), "--runs", str(tmp_path / "runs"), "--results", str(results), cwd=tmp_path)
    assert again.returncode == 0 and "ran 0 stages" in again.stdout, again.stdout + again.stderr


def test_compare_names_a_missing_folder(tmp_path):
    proc = run_cli("compare", "--good", str(tmp_path / "nope"), "--bad", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "--good" in proc.stderr and "nope" in proc.stderr, proc.stderr


def _frame(seeds: int, ambient_gain: float, quantity: str = "fd_bandpass") -> pd.DataFrame:
    rng = np.random.default_rng(1)
    data = []
    for seed in range(seeds):
        base = 20 + rng.normal()
        for method, value in (("clean_only", base), ("all_data", base + 0.3 * rng.normal()),
                              ("ambient_o", base - ambient_gain + 0.1 * rng.normal())):
            data.append({"suite": "t", "cell": f"{method}/{seed}", "method.name": method, "train.seed": seed,
                         "dataset.name": "user_folders", "quantity": quantity, "value": value,
                         "dataset": "user_folders(...)", "dataset_hash": "abcdef0123456789", "clean_fraction": 1.0,
                         "num_samples": 64, "sampler": "EDM Heun", "checkpoint": "final EMA",
                         "feature_extractor": "bandpass", "implementation": "own"})
    return pd.DataFrame(data)


def test_a_suite_without_tables_gets_the_default_table_with_verdicts(tmp_path):
    written = render_all(_frame(seeds=6, ambient_gain=2.0), [], tmp_path)
    assert tmp_path / "methods.md" in written
    text = (tmp_path / "methods.md").read_text()
    assert "| Method" in text and "fd_bandpass ↓" in text
    line = next(x for x in text.splitlines() if x.startswith("- Ambient-o vs Clean only"))
    assert "6 seeds" in line and line.endswith("lower is better)") and ": better (" in line


def test_one_seed_says_no_verdict_is_possible(tmp_path):
    render_all(_frame(seeds=1, ambient_gain=2.0), [], tmp_path)
    assert ONE_SEED in (tmp_path / "methods.md").read_text()


def test_a_spec_column_no_result_fills_is_a_loud_warning_and_the_default_table(tmp_path, capsys):
    spec = REPO / "benchmarks" / "tables" / "table2a.yaml"
    frame = _frame(seeds=3, ambient_gain=0.0)
    frame["mix.corruption.sigma"] = 1.0
    render_all(frame, [spec], tmp_path)
    err = capsys.readouterr().err
    assert "warning:" in err and "fd_digits" in err and "no result has fd_digits" in err
    assert (tmp_path / "methods.md").is_file()
    assert "**Warning**: column 'FD_digits' is empty: no result has fd_digits" in (tmp_path / "table2a.md").read_text()


def test_a_spec_column_the_suite_cannot_compute_fails_before_training(tmp_path):
    suite = tmp_path / "mine.yaml"  # a copy elsewhere: tables/pool.yaml is found among the packaged specs
    text = (REPO / "benchmarks" / "user_folders_example.yaml").read_text()
    suite.write_text(text.replace("metrics: [{name: fd_digits, epochs: 5}]", "metrics: [fd_bandpass]")
                     + "\ntables: [tables/pool.yaml]\n")
    with pytest.raises(UserError, match=r"pool.yaml: column 'FD_digits' shows fd_digits, which no cell .* evaluates"):
        check_specs(load_suite(suite))
    proc = run_cli("plan", str(suite), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "fd_digits" in proc.stderr, proc.stderr


def test_table_specs_resolve_beside_the_suite_then_among_the_packaged_ones(tmp_path):
    source = (REPO / "benchmarks" / "smoke_cpu.yaml").read_text()
    suite = tmp_path / "smoke.yaml"
    suite.write_text(source)
    assert load_suite(suite).tables == [(REPO / "benchmarks" / "tables" / "table2a.yaml").resolve()]
    (tmp_path / "tables").mkdir()
    shutil.copy(REPO / "benchmarks" / "tables" / "table2a.yaml", tmp_path / "tables" / "table2a.yaml")
    assert load_suite(suite).tables == [(tmp_path / "tables" / "table2a.yaml").resolve()]
    suite.write_text(source.replace("tables/table2a.yaml", "tables/nowhere.yaml"))
    with pytest.raises(UserError, match=r"smoke.yaml:\d+: table spec 'tables/nowhere.yaml' not found: neither "
                                        rf"{tmp_path}/tables/nowhere.yaml nor .*benchmarks/tables/nowhere.yaml"):
        load_suite(suite)


def test_data_folders_resolve_beside_the_suite(tmp_path, monkeypatch):
    good, bad = write_folders(tmp_path / "mine" / "data", good=2, bad=2, size=8)
    suite = tmp_path / "mine" / "suite.yaml"
    suite.write_text((REPO / "benchmarks" / "user_folders_example.yaml").read_text()
                     .replace("data/example_folders/high_quality", "data/good")
                     .replace("[data/example_folders/low_quality]", "[data/bad]")
                     .replace("out_of_distribution: [data/example_folders/out_of_distribution]", ""))
    monkeypatch.chdir(tmp_path)  # elsewhere: the folders are found next to the suite, not here
    dataset = load_suite(suite).cells[0].config["dataset"]
    assert dataset["high_quality"] == str(good.resolve()) and dataset["low_quality"] == [str(bad.resolve())]


def test_a_list_override_of_a_single_value_key_becomes_a_grid_axis():
    suite = load_suite(REPO / "benchmarks" / "smoke_cpu.yaml", ["train.duration_kimg=2", "train.seed=[0,1]"])
    assert len(suite.cells) == 12 and "train.seed" in suite.axes
    assert sorted({c.config["train"]["seed"] for c in suite.cells}) == [0, 1]
    lists = load_suite(REPO / "benchmarks" / "user_folders_example.yaml", ["dataset.low_quality=[a,b]"])
    assert lists.cells[0].config["dataset"]["low_quality"] == ["a", "b"]  # a list-valued key keeps its list


def test_plan_accepts_the_readme_list_override():
    proc = run_cli("plan", "benchmarks/smoke_cpu.yaml", "train.duration_kimg=2", "train.seed=[0,1]")
    assert proc.returncode == 0 and "12 cells" in proc.stdout, proc.stderr


def test_seeds_for_power_matches_the_paired_t_tables():
    # two-sided paired t, α 0.05, 80% power: d_z 0.5 → 34 pairs, d_z 1 → 10 (Cohen 1988; G*Power gives the same)
    assert seeds_for_power(0.5, 1.0) == 34 and seeds_for_power(-1.0, 1.0) == 10
    assert seeds_for_power(3.0, 1.0) == SIGN_FLIP_MIN_SEEDS == 6  # the sign-flip test needs 6 seeds for p < 0.05
    assert seeds_for_power(0.0, 1.0) is None and seeds_for_power(1.0, 0.0) == SIGN_FLIP_MIN_SEEDS


def test_verdict_words_follow_the_metrics_direction():
    seeds = range(6)
    a = {s: 10.0 - 0.1 * s for s in seeds}
    b = {s: 12.0 + 0.1 * s for s in seeds}
    assert ": better (lower" in verdict("A", "B", "FD", "{:.1f}", True, a, b)
    assert ": worse (lower" in verdict("A", "B", "IS", "{:.1f}", False, a, b)
    noisy = verdict("A", "B", "FD", "{:.1f}", True, {0: 1.0, 1: 3.0, 2: 2.0}, {0: 2.0, 1: 2.0, 2: 2.5})
    assert noisy.startswith("A vs B: −0.2 FD (95% CI [")
    assert "3 seeds): no evidence either way (the sign-flip test needs 6 seeds or more" in noisy
    assert verdict("A", "B", "FD", "{:.1f}", True, {0: 1.0}, {0: 2.0}) is None
