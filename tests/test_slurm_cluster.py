"""`run --launcher slurm` against a real SLURM (slurmctld + slurmd on this machine, tests/slurm_cluster.py):
the tiny projection of smoke_cpu goes through sbatch and gives a local run's numbers byte for byte;
a job killed with scancel blocks what reads it, `status` says so, and re-submitting finishes the suite.
Job ids and squeue output go to the test log (capture disabled), so CI shows the real daemons at work."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_CELL, numbers_of, run_cli
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
    os.environ["SLURM_CONF"] = str(cluster.conf)
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[slurm] slurmctld + slurmd up in {cluster.started_in:.1f} s ({cluster.conf}); sinfo: "
              + cluster.run("sinfo", "-N", "-h", "-o", "%N %T %c CPUs %m MB").stdout.strip(), flush=True)
    yield cluster
    cluster.stop()
    os.environ.pop("SLURM_CONF", None)


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


def test_smoke_cpu_tiny_through_sbatch_equals_a_local_run(slurm, tmp_path, capsys):
    local = subprocess.Popen([sys.executable, "-m", "ambient_bench", "run", SMOKE, "--profile", "tiny",
                              "--runs", str(tmp_path / "local"), "--results", str(tmp_path / "local_results")],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    began = time.time()
    runs = tmp_path / "runs"
    submitted = run_cli("run", SMOKE, "--profile", "tiny", "--runs", str(runs), "--launcher", "slurm",
                        "--cluster", str(cluster_file(tmp_path)), *SMALL)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    say(capsys, *submitted.stdout.strip().splitlines())
    waves = [line for line in submitted.stdout.splitlines() if line.startswith("wave ")]
    assert 1 < len(waves) <= 6 and all("(job " in line for line in waves)
    ended = wait_for_jobs(slurm, capsys)
    assert ended.count("COMPLETED") == 24 and "FAILED" not in ended
    status = run_cli("status", SMOKE, "--profile", "tiny", "--runs", str(runs))
    assert status.returncode == 0 and "totals: 24 done" in status.stdout, status.stdout
    results = run_cli("run", SMOKE, "--profile", "tiny", "--runs", str(runs), "--results", str(tmp_path / "results"))
    assert results.returncode == 0 and "ran 0 stages, reused 24" in results.stdout, results.stdout
    out, _ = local.communicate(timeout=600)
    assert local.returncode == 0, out[-2000:]
    assert numbers_of(tmp_path / "results" / "results.csv") == numbers_of(tmp_path / "local_results" / "results.csv")
    say(capsys, f"smoke_cpu tiny through sbatch: 24 stages in {time.time() - began:.0f} s, results.csv equal to "
                f"the local run's (provenance columns aside)")


SUITE = TINY_CELL.replace("train: {{batch: 32, duration_kimg: 0.2, checkpoint_kimg: 0.1}}",
                          "train: {{batch: 32, duration_kimg: 1.0, checkpoint_kimg: 0.1}}")


def test_scancel_blocks_what_reads_it_and_resubmitting_finishes(slurm, tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(name="cancel", results=tmp_path / "results"))
    runs, cluster = tmp_path / "runs", str(cluster_file(tmp_path))
    sequential = subprocess.Popen([sys.executable, "-m", "ambient_bench", "run", str(suite), "--runs", str(tmp_path / "seq"),
                                   "--results", str(tmp_path / "seq_r")], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
    submitted = run_cli("run", str(suite), "--runs", str(runs), "--launcher", "slurm", "--cluster", cluster, *SMALL)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    say(capsys, *submitted.stdout.strip().splitlines())
    train = next(line for line in submitted.stdout.splitlines() if "train ×1 (job " in line)
    job = train.split("train ×1 (job ")[1].split(")")[0] + "_0"
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("train/*/checkpoint.pt")):  # killed mid-training
        time.sleep(0.2)
    assert slurm.run("scancel", job).returncode == 0
    say(capsys, f"scancel {job} (training had written a checkpoint)")
    ended = wait_for_jobs(slurm, capsys)
    assert f"{job} " in ended and "CANCELLED" in ended
    status = run_cli("status", str(suite), "--runs", str(runs))
    say(capsys, *status.stdout.strip().splitlines())
    assert status.returncode == 1
    rows = {line.split()[0]: line for line in status.stdout.splitlines() if line.split()[:1]}
    assert " cancelled " in rows["train"] and f"job {job} ended (cancelled) without finishing the stage" in rows["train"]
    assert "blocked" in rows["sample"] and "its input train" in rows["sample"]
    again = run_cli("run", str(suite), "--runs", str(runs), "--launcher", "slurm", "--cluster", cluster, *SMALL)
    assert again.returncode == 0, again.stdout + again.stderr
    say(capsys, *again.stdout.strip().splitlines())
    assert "wave 0: train ×1" in again.stdout and "mix" not in again.stdout  # only what is not done
    wait_for_jobs(slurm, capsys)
    attempts = next(runs.glob("train/*/attempts.log")).read_text()
    assert attempts.count(" start ") == 2 and attempts.count(" done ") == 1
    written = run_cli("run", str(suite), "--runs", str(runs))
    assert written.returncode == 0 and "ran 0 stages" in written.stdout, written.stdout + written.stderr
    out, _ = sequential.communicate(timeout=600)
    assert sequential.returncode == 0, out[-2000:]
    assert numbers_of(tmp_path / "results" / "results.csv") == numbers_of(tmp_path / "seq_r" / "results.csv")
