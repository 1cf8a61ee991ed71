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


def frame(extra_rows=(), seeds=((0, 0.0), (1, 2.0))):
    data = []
    for seed, jitter in seeds:
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
    # two seeds: the mean with its 95% log-scale t-interval (FD >= 0); no paired test separates two seeds: all bold
    assert "**31.0 [20.6, 46.7]**" in lines["Ambient-o (fixed σ_min)"]
    assert "**101.0 [89.1, 114.5]**" in lines["All data"]
    assert "–" in lines["Only clean"]  # no sigma for clean-only
    assert "1.60" in lines["Ambient-o (fixed σ_min)"] and "1.60 [" not in lines["Ambient-o (fixed σ_min)"]
    assert lines["Only clean"].index("Only clean") < lines["Only clean"].index("51.0")
    assert "1000 per model" in md and "digits-cnn features" in md and "seeds {0, 1}" in md
    assert "45.32" in paper and "Status in ambient_bench: not-run" in paper and "**5.34**" in paper
    assert "Ambient-o (classifier annotations)" in paper  # the paper's row, under the paper's own name
    tex = out["tex"]
    assert r"\multicolumn{2}{c}{$\sigma_B = 0.6$}" in tex and r"\textbf{31.0 [20.6, 46.7]}" in tex
    assert tex.count(r"\begin{tabular}") == 2


def test_bold_marks_only_what_six_seeds_separate():
    six = render(frame(seeds=[(k, 0.5 * k) for k in range(6)]), load_spec(SPEC))["md"].split("## The paper")[0]
    lines = {line.split("|")[1].strip(): line for line in six.splitlines() if line.startswith("| ")}
    assert "**" in lines["Ambient-o (fixed σ_min)"] and "**" not in lines["All data"]
    assert "**" not in lines["Only clean"]


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


REFERENCE = REPO / "benchmarks" / "reference" / "ambient_omni_paper.yaml"


def test_reference_file_loads_through_its_schema():
    from ambient_bench.results.reference import STATUSES, load_reference

    tables = load_reference(REFERENCE)
    assert {"table1", "table2a", "table2b", "table3", "table4", "table5", "table6", "table7", "appB1", "appD",
            "text_to_image"} <= set(tables)
    for table in tables.values():
        assert table.status in STATUSES and table.rows
        if table.status in ("different-protocol", "not-supported"):
            assert table.reason
    # the paper's Table 2(a) Ambient-o row is classifier-annotated, and says so
    ambient = tables["table2a"].lookup({"method.name": "ambient_o", "method.annotate": "classifier",
                                        "mix.corruption.sigma": 0.6})
    assert ambient.values["fid"] == 5.34 and "classifier" in ambient.label
    assert tables["table2a"].lookup({"method.name": "ambient_o", "method.annotate": "fixed",
                                     "mix.corruption.sigma": 0.6}) is None
    # a partial mapping pattern matches a full dataset spec as results.csv stores it (JSON text)
    cats = tables["table2b"].lookup({"dataset.animal": "dog", "method.name": "ambient_o", "method.ood_sigma_max": 0.1,
                                     "mix.ood": '[{"name": "afhq", "animal": "cat", "split": "all", "root": null}]'})
    assert cats.values["fid"] == 9.85


@pytest.mark.parametrize("edit, message", [
    (("    status: not-run\n", "    staus: not-run\n"), r"unknown key 'staus'.*did you mean 'status'"),
    (("values: {fid: 8.79}", "values: {fdi: 8.79}"), r"unknown column 'fdi'.*did you mean 'fid'"),
    (("{match: {method.name: clean_only}, label: \"Only clean (10%)\"",
      "{match: {method.nme: clean_only}, label: \"Only clean (10%)\""), r"unknown row key 'method.nme'"),
    (("    status: not-run\n", "    status: done\n"), r"must be one of .*'not-run'"),
    (("    status: not-supported\n", "    status: different-protocol\n"), None),
])
def test_broken_reference_copy_fails_with_file_and_line(tmp_path, edit, message):
    from ambient_bench.results.reference import load_reference

    text = REFERENCE.read_text()
    old, new = edit
    assert old in text
    broken = tmp_path / "paper.yaml"
    broken.write_text(text.replace(old, new, 1))
    line = text[:text.index(old)].count("\n") + 1 + old[:-1].count("\n") * 0
    if message is None:  # a status that needs a reason keeps the table's reason: still valid
        load_reference(broken)
        return
    with pytest.raises(UserError) as err:
        load_reference(broken)
    text_err = str(err.value)
    assert "\n" not in text_err and text_err.startswith(f"{broken}:")
    assert abs(int(text_err.split(":")[1]) - line) <= 1, (text_err, line)
    assert __import__("re").search(message, text_err), text_err


def test_reference_status_needing_a_reason_without_one_is_an_error(tmp_path):
    from ambient_bench.results.reference import load_reference

    text = REFERENCE.read_text()
    start = text.index("  table4:")
    section = text[start:text.index("  table5:")]
    reason = next(line for line in section.splitlines() if line.startswith("    reason:"))
    broken = tmp_path / "paper.yaml"
    broken.write_text(text.replace(section, section.replace("status: not-run", "status: different-protocol")
                                   .replace(reason + "\n", ""), 1))
    with pytest.raises(UserError, match=r"paper.yaml:\d+: status different-protocol needs a reason"):
        load_reference(broken)


def long_spec(tmp_path, compare=True):
    path = tmp_path / "long.yaml"
    path.write_text(f"""
id: long
title: "long layout"
rows:
  key: method.name
  order: [clean_only, all_data, ambient_o]
  labels: {{clean_only: "Only clean", all_data: "All data", ambient_o: "Ambient-o"}}
  params: [{{key: mix.corruption.sigma, header: "σ_B", descending: true}}]
values:
  - {{quantity: sigma_min_mean, label: "σ̄", paper: sigma_min_mean}}
  - {{quantity: fd_digits, label: "FD", better: lower, fmt: "{{:.1f}}", paper: fid}}
reference: {{file: {REFERENCE}, table: table2a}}
compare: {str(compare).lower()}
""")
    return load_spec(path)


def classifier_frame():
    df = frame()
    df["method.annotate"] = ["classifier" if m == "ambient_o" else None for m in df["method.name"]]
    return df


def test_long_layout_one_row_per_parameter_with_the_papers_number_beside(tmp_path):
    from ambient_bench.results.render import status_problems

    md = render(classifier_frame(), long_spec(tmp_path))["md"]
    ours = md.split("## The paper's numbers")[0]
    body = [[c.strip() for c in line.split("|")[1:-1]] for line in ours.splitlines()
            if line.startswith("| ") and "---" not in line]
    assert body[0] == ["Method", "σ_B", "σ̄", "paper", "FD ↓", "paper"]
    # σ_B descending, as the paper lists it; the paper's numbers and Δ = ours − paper beside ours
    assert [row[:2] for row in body[1:]] == [["Only clean", "1"], ["Only clean", "0.6"], ["All data", "1"],
                                            ["All data", "0.6"], ["Ambient-o", "1"], ["Ambient-o", "0.6"]]
    ambient_06 = body[6]
    assert ambient_06[2] == "1.60" and ambient_06[3] == "1.38 (Δ +0.22 ✗)"   # tolerance 0.2
    assert ambient_06[5] == "5.34 (Δ +25.66 ✗)" and body[2][5] == "8.79 (Δ +42.21 ✗)"
    problems = status_problems(classifier_frame(), long_spec(tmp_path))
    assert problems and "status not-run" in problems[0]  # numbers compared while the reference says not-run
    assert status_problems(classifier_frame(), long_spec(tmp_path, compare=False)) == []


def test_tiny_profile_shows_the_papers_numbers_without_a_verdict(tmp_path):
    from ambient_bench.results.render import status_problems

    df = classifier_frame().assign(profile="tiny")
    md = render(df, long_spec(tmp_path))["md"]
    assert "Tiny profile" in md and "Δ" not in md.split("- ")[0] and "5.34 |" in md.replace("  ", "")
    assert status_problems(df, long_spec(tmp_path)) == []


def test_results_index_is_regenerated_from_the_committed_results(monkeypatch, capsys):
    from ambient_bench.cli import main

    monkeypatch.chdir(REPO)
    assert main(["index", "--check"]) == 0, capsys.readouterr().out
    index = (REPO / "results" / "README.md").read_text()
    for suite in (p.name for p in (REPO / "results").iterdir() if (p / "results.csv").is_file()):
        assert f"`results/{suite}/`" in index and f"python -m ambient_bench run benchmarks/{suite}.yaml" in index
    assert "table2a: not-run" in index and "text_to_image" in index
