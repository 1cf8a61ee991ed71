"""Table rendering in the paper's layout, and the committed tables match their results."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from ambient_bench import UserError
from ambient_bench.results.render import render
from ambient_bench.results.tables import load_spec

from conftest import REPO, run_cli

SPEC = REPO / "benchmarks" / "tables" / "table2a.yaml"
PROTOCOL = dict(dataset="digits(resolution=16)", dataset_hash="abcdef0123456789", clean_fraction=0.1,
                num_samples=1000, sampler="EDM Heun, 18 steps (35 NFE)", checkpoint="final EMA",
                implementation="torch-fidelity 0.4.0")


def rows(method, sigma, seed, fd, sigma_bar, extra=None):
    base = {"suite": "t", "cell": f"{method}/{sigma}/{seed}", "dataset.name": "digits", "method.name": method,
            "train.seed": seed, "mix.corruption.sigma": sigma, **(extra or {}), **PROTOCOL}
    return [{**base, "quantity": "sigma_min_mean", "value": sigma_bar, "feature_extractor": None},
            {**base, "quantity": "fd_digits", "value": fd, "feature_extractor": "digits-cnn features"}]


def frame(extra_rows=()):
    data = []
    for seed, jitter in ((0, 0.0), (1, 2.0)):
        for sigma in (0.6, 1.0):
            data += rows("clean_only", sigma, seed, 50 + jitter, math.nan)
            data += rows("all_data", sigma, seed, 40 + 100 * sigma + jitter, 0.0)
            data += rows("ambient_o", sigma, seed, 30 + jitter, 1.0 + sigma)
    return pd.DataFrame(data + list(extra_rows))


def test_layout_bold_mean_std_and_footnote():
    out = render(frame(), load_spec(SPEC))
    md, paper = out["md"].split("## The paper's numbers")
    assert "| Method" in md and "σ_B = 0.6 · FD_digits ↓" in md and "σ_B = 1.0 · σ̄_tn^min" in md
    lines = {line.split("|")[1].strip(): line for line in md.splitlines()
             if line.startswith("| ") and "---" not in line}
    assert "**31.0 ± 1.4**" in lines["Ambient-o (fixed σ_min)"]  # best (lowest) in bold, mean ± std of 2 seeds
    assert "**" not in lines["All data"] and "–" in lines["Only clean"]  # no sigma for clean-only
    assert "1.60" in lines["Ambient-o (fixed σ_min)"] and "1.60 ±" not in lines["Ambient-o (fixed σ_min)"]
    assert lines["Only clean"].index("Only clean") < lines["Only clean"].index("51.0")
    assert "1000 per model" in md and "digits-cnn features" in md and "seeds {0, 1}" in md
    assert "45.32" in paper and "different-protocol" in paper and "**5.34**" in paper
    tex = out["tex"]
    assert r"\multicolumn{2}{c}{$\sigma_B = 0.6$}" in tex and r"\textbf{31.0 $\pm$ 1.4}" in tex
    assert tex.count(r"\begin{tabular}") == 2


def test_rows_follow_spec_order_and_missing_cells_are_dashes():
    df = frame()
    df = df[~((df["method.name"] == "all_data") & (df["mix.corruption.sigma"] == 1.0))]
    md = render(df, load_spec(SPEC))["md"].split("## The paper")[0]
    table = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in table] == ["Only clean", "All data", "Ambient-o (fixed σ_min)"]
    assert table[1].rstrip(" |").endswith("–")


def test_ambiguous_cell_is_an_error():
    df = frame()
    df["method.sigma_min"] = [1.0 if m == "ambient_o" else None for m in df["method.name"]]
    df = pd.concat([df, pd.DataFrame(rows("ambient_o", 0.6, 0, 10.0, 2.0, {"method.sigma_min": 2.0}))])
    with pytest.raises(UserError, match=r"mixes several configurations .*method.sigma_min"):
        render(df, load_spec(SPEC))


def test_spec_typos_are_reported_with_line(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text(SPEC.read_text().replace("better: lower", "beter: lower"))
    with pytest.raises(UserError, match=r"t.yaml:\d+: unknown key 'beter'.*did you mean 'better'"):
        load_spec(bad)


@pytest.mark.parametrize("suite", sorted(p.name for p in (REPO / "results").iterdir() if (p / "results.csv").is_file())
                         if (REPO / "results").is_dir() else [])
def test_committed_tables_are_regenerated_from_committed_results(suite):
    proc = run_cli("tables", f"benchmarks/{suite}.yaml", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
