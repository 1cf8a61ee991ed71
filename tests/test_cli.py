"""End to end through the command line: bad input, the smoke suite, kill and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, TINY_SUITE, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mutation,expected", [
    (("clean_fraction: 0.1", "clean_fractoin: 0.1"),
     "unknown key 'clean_fractoin' in 'mix'; did you mean 'clean_fraction'?"),
    (("name: gaussian_blur", "name: gaussian_blurr"),
     "unknown corruption 'gaussian_blurr'; did you mean 'gaussian_blur'?"),
    (("[clean_only,", "[clean_onyl,"), "unknown method 'clean_onyl'; did you mean 'clean_only'?"),
])
def test_bad_suite_exits_2_with_one_line_and_writes_nothing(tmp_path, mutation, expected):
    suite = tmp_path / "bad.yaml"
    suite.write_text(TINY_SUITE.format(results=tmp_path / "results").replace(*mutation))
    for command in ("plan", "run"):
        proc = run_cli(command, str(suite), "--runs", str(tmp_path / "runs"))
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and expected in proc.stderr and "bad.yaml:" in proc.stderr
        assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_missing_suite_file_and_unknown_kind(tmp_path):
    proc = run_cli("plan", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "not found" in proc.stderr
    proc = run_cli("list", "corruptoin")
    assert proc.returncode == 2 and "did you mean 'corruption'" in proc.stderr


def test_list_shows_components_and_parameters():
    proc = run_cli("list")
    assert proc.returncode == 0
    for text in ("gaussian_blur", "sigma: float, default 1.0", "digits", "clean_only", "all_data", "ambient_o",
                 "fd_digits", "version 1"):
        assert text in proc.stdout
    assert "datasets:" not in run_cli("list", "methods").stdout


def test_smoke_suite_runs_then_reruns_nothing(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    first = run_cli("run", "benchmarks/smoke_cpu.yaml", "--runs", str(runs), "--results", str(results))
    assert first.returncode == 0, first.stderr
    assert "ran 24 stages, reused 0" in first.stdout
    # torch-fidelity's "Creating feature extractor" line is in the evaluate stage's log, not on the console
    assert "Creating feature extractor" not in first.stdout + first.stderr
    logs = "".join(p.read_text() for p in runs.glob("evaluate/*/log.txt"))
    assert '[torch-fidelity] Creating feature extractor "digits-cnn"' in logs
    table = (results / "table2a.md").read_text()
    assert "Ambient-o (fixed σ_min)" in table and "FD_digits" in table
    assert (results / "table2a.tex").is_file() and (results / "results.csv").is_file()
    done_markers = {p: p.stat().st_mtime_ns for p in runs.glob("*/*/DONE")}
    assert len(done_markers) == 24
    # the clean-only model is trained once and serves both blur levels
    trains = [json.loads(p.read_text()) for p in runs.glob("train/*/stage.json")]
    assert len(trains) == 5

    second = run_cli("run", "benchmarks/smoke_cpu.yaml", "--runs", str(runs), "--results", str(results))
    assert second.returncode == 0 and "ran 0 stages, reused 24" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/*/DONE")} == done_markers
    assert (results / "table2a.md").read_text() == table

    plan = run_cli("plan", "benchmarks/smoke_cpu.yaml", "--runs", str(runs))
    assert "24 done, 0 partial, 0 missing" in plan.stdout
    tables = run_cli("tables", "benchmarks/smoke_cpu.yaml", "--results", str(results), "--check")
    assert tables.returncode == 0, tables.stdout
    # `tables` regenerates the report page too, with the run store that has its samples; without it, keeps it
    page = results / "index.html"
    page.unlink()
    tables = run_cli("tables", "benchmarks/smoke_cpu.yaml", "--results", str(results), "--runs", str(runs))
    assert tables.returncode == 0 and page.is_file(), tables.stdout
    before = page.read_text()
    tables = run_cli("tables", "benchmarks/smoke_cpu.yaml", "--results", str(results), "--runs", str(tmp_path / "x"))
    assert tables.returncode == 0 and "kept" in tables.stdout and page.read_text() == before


def test_killed_training_resumes_when_the_command_is_rerun(tmp_path):
    runs = tmp_path / "runs"
    args = ["run", "benchmarks/smoke_cpu.yaml", "--runs", str(runs), "--results", str(tmp_path / "results"),
            "method=all_data", "mix.corruption.sigma=1.0", "train.duration_kimg=24", "train.checkpoint_kimg=0.4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ambient_bench", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    checkpoint = None
    while time.time() < deadline and proc.poll() is None:
        found = list(runs.glob("train/*/checkpoint.pt"))
        if found:
            checkpoint = found[0]
            break
        time.sleep(0.05)
    assert checkpoint is not None, "training never wrote a checkpoint"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    train_dir = checkpoint.parent
    assert not (train_dir / "DONE").exists(), "training finished before it could be killed"
    assert json.loads((train_dir / "status.json").read_text())["state"] == "running"
    plan = run_cli("plan", "benchmarks/smoke_cpu.yaml", "--runs", str(runs), *args[6:])
    assert "1 partial" in plan.stdout, plan.stdout + plan.stderr

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    resumed = [line for line in rerun.stdout.splitlines() if "resuming from checkpoint at step" in line]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) > 0
    assert "— resuming" in rerun.stdout and (train_dir / "DONE").is_file()
    assert json.loads((train_dir / "status.json").read_text())["state"] == "done"
    lines = [json.loads(line) for line in (train_dir / "stats.jsonl").read_text().splitlines()]
    for kind in ("loss", "ema_loss"):  # the training log and the EMA probe at checkpoints
        steps = [line["step"] for line in lines if kind in line]
        assert steps == sorted(set(steps)) and steps[-1] == 750  # no step logged twice across the kill
