"""`run --launcher slurm` against a real SLURM (slurmctld + slurmd on this machine, tests/slurm_cluster.py):
the tiny projection of smoke_cpu goes through sbatch; one training job killed with scancel blocks what
reads it, `status` says so, re-submitting finishes the suite, and the results equal a local run's.
Job ids and squeue output go to the test log (capture disabled), so CI shows the real daemons at work."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, numbers_of, run_cli
from slurm_cluster import Unavailable, start

pytestmark = pytest.mark.slow
SMOKE = str(REPO / "benchmarks" / "smoke_cpu.yaml")
# no GPUs on the test node, one CPU per task (two tasks at once on two cores), memory for scheduling only
SMALL = ["resources.all.gpus=0", "resources.all.cpus=1", "resources.all.mem_gb=1", "resources.all.time_min=10"]


@pytest.fixture(scope="session")
def slurm(tmp_path_factory, pytestconfig):
    """A running single-node cluster for the session (skipped, with the reason, where none can start)."""
    try:
        cluster = start(tmp_path_factory.mktemp("slurm"))
    except Unavailable as err:
        pytest.skip(f"no SLURM here: {err}")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[slurm] slurmctld + slurmd up in {cluster.started_in:.1f} s ({cluster.conf}); sinfo: "
              + cluster.run("sinfo", "-N", "-h", "-o", "%N %T %c CPUs %m MB").stdout.strip(), flush=True)
    yield cluster  # a test points the CLI at it with monkeypatch.setenv("SLURM_CONF", ...): nothing leaks
    cluster.stop()


def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(f"partition: debug\npartitions:\n  debug: {{max_time_min: 60, gpus_per_node: 0, "
                    f"cpus_per_node: {os.cpu_count()}, mem_gb: 4}}\n")
    return path


def say(capsys, *lines: str) -> None:
    with capsys.disabled():
        for line in lines:
            print(f"[slurm] {line}", flush=True)


def wait_for_jobs(slurm, capsys, timeout: float = 300) -> str:
    """Until no job is pending or running; squeue now and then into the log; the final `squeue -t all`."""
    deadline, shown = time.time() + timeout, 0.0
    while time.time() < deadline:
        live = slurm.run("squeue", "-h", "-o", "%i %j %T %r").stdout.strip()
        if not live:
            break
        if time.time() - shown > 15:
            say(capsys, "squeue: " + " | ".join(live.splitlines()[:6]))
            shown = time.time()
        time.sleep(1)
    else:
        pytest.fail(f"jobs still queued after {timeout:.0f} s: {live}; {slurm.log_tail('slurmctld.log')}")
    done = slurm.run("squeue", "-h", "-t", "all", "-o", "%i %j %T %M").stdout.strip()
    say(capsys, "squeue -t all (accounting off: what slurmctld remembers):", *done.splitlines())
    return done


def _job_of(wave_line: str, kind: str) -> str:
    return wave_line.split(f"{kind} ×")[1].split("(job ")[1].split(")")[0]


def _cancel_a_running_training(slurm, runs: Path, submitted: str, capsys) -> tuple[str, Path]:
    """scancel the array task of a training stage once it holds its stage (mid-training); (task, stage folder)."""
    array = _job_of(next(line for line in submitted.splitlines() if "train ×" in line), "train")
    stages = next(runs.glob("_slurm/*/w*_train.stages")).read_text().split()
    deadline = time.time() + 240
    while time.time() < deadline:
        for i, ident in enumerate(stages):
            folder = runs / "train" / ident.split(":")[1]
            status = folder / "status.json"
            if not (folder / "DONE").exists() and status.is_file() and '"running"' in status.read_text():
                task = f"{array}_{i}"
                assert slurm.run("scancel", task).returncode == 0
                say(capsys, f"scancel {task}: training {ident} was running")
                return task, folder
        time.sleep(0.1)
    pytest.fail("no training stage was seen running")


def test_smoke_cpu_tiny_through_sbatch_equals_a_local_run_also_after_scancel(slurm, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    local = subprocess.Popen([sys.executable, "-m", "ambient_bench", "run", SMOKE, "--profile", "tiny",
                              "--runs", str(tmp_path / "local"), "--results", str(tmp_path / "local_results")],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    began = time.time()
    runs, cluster = tmp_path / "runs", str(cluster_file(tmp_path))
    submit = ["run", SMOKE, "--profile", "tiny", "--runs", str(runs), "--launcher", "slurm", "--cluster", cluster,
              *SMALL]
    submitted = run_cli(*submit)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    say(capsys, *submitted.stdout.strip().splitlines())
    waves = [line for line in submitted.stdout.splitlines() if line.startswith("wave ")]
    assert 1 < len(waves) <= 6 and all("(job " in line for line in waves)  # one line per wave
    twice = run_cli(*submit)  # no second copy of jobs still queued
    assert twice.returncode == 2 and "still have jobs pending or running" in twice.stderr, twice.stdout + twice.stderr
    task, folder = _cancel_a_running_training(slurm, runs / "tiny", submitted.stdout, capsys)
    ended = wait_for_jobs(slurm, capsys)
    assert f"{task} " in ended and ended.count("COMPLETED") == 24 - 3 and ended.count("CANCELLED") == 1
    status = run_cli("status", SMOKE, "--profile", "tiny", "--runs", str(runs))
    say(capsys, *status.stdout.strip().splitlines())
    rows = [line for line in status.stdout.splitlines() if line.startswith(("train ", "sample ", "evaluate "))]
    assert status.returncode == 1 and "totals: 2 blocked, 1 cancelled, 21 done" in status.stdout
    assert any(f"job {task} ended (cancelled) without finishing the stage" in row for row in rows)
    assert sum(" blocked " in row and "not run: its input " in row for row in rows) == 2
    again = run_cli(*submit)
    assert again.returncode == 0, again.stdout + again.stderr
    say(capsys, *again.stdout.strip().splitlines())
    assert "train ×1" in again.stdout and "sample ×1" in again.stdout and "mix" not in again.stdout
    ended = wait_for_jobs(slurm, capsys)
    assert (folder / "attempts.log").read_text().count(" start ") == 2
    status = run_cli("status", SMOKE, "--profile", "tiny", "--runs", str(runs))
    assert status.returncode == 0 and "totals: 24 done" in status.stdout, status.stdout
    results = run_cli("run", SMOKE, "--profile", "tiny", "--runs", str(runs), "--results", str(tmp_path / "results"))
    assert results.returncode == 0 and "ran 0 stages, reused 24" in results.stdout, results.stdout
    out, _ = local.communicate(timeout=600)
    assert local.returncode == 0, out[-2000:]
    assert numbers_of(tmp_path / "results" / "results.csv") == numbers_of(tmp_path / "local_results" / "results.csv")
    say(capsys, f"smoke_cpu tiny through sbatch, one training cancelled and re-submitted: {time.time() - began:.0f} s; "
                f"results.csv equal to the local run's (provenance columns aside)")
