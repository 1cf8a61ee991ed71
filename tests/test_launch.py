"""Scale-out through submitit: sbatch scripts with the declared resources and dependencies
(--dry-run), and the same jobs on submitit's local executor giving the sequential results."""
from __future__ import annotations

import re

import pytest

from conftest import TINY_CELL, run_cli, numbers_of

pytestmark = pytest.mark.slow
pytest.importorskip("submitit")

# training keeps its default 8 GPUs per node: on a machine without GPUs the local executor runs one task
SUITE = TINY_CELL + """resources:
  train: {{cpus: 2, mem_gb: 4, time_min: 30, partition: debug}}
grid:
  method: [clean_only, all_data]
"""


def test_dry_run_writes_sbatch_scripts_with_resources_and_dependencies(tmp_path):
    runs = tmp_path / "runs"
    proc = run_cli("run", "benchmarks/mini_table2a.yaml", "--runs", str(runs), "--launcher", "slurm", "--dry-run",
                   "resources.train.gpus=4", "resources.train.nodes=2", "resources.train.partition=gpu",
                   "resources.train.account=lab", "resources.evaluate.time_min=30", "resources.sample.gpus=2")
    assert proc.returncode == 0, proc.stderr
    out = runs / "_slurm" / "dry-run-mini_table2a"
    train = (out / next(p.name for p in out.glob("train_*.sbatch"))).read_text()
    for line in ("#SBATCH --gpus-per-node=4", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=2880",
                 f"#SBATCH --output={out}/logs/%j_0_log.out"):
        assert line in train
    assert re.search(r"srun .* -m ambient_bench stage .*mini_table2a\.yaml .* --stage train:[0-9a-f]{16}", train)
    evaluate = next(out.glob("evaluate_*.sbatch")).read_text()
    assert "#SBATCH --time=30" in evaluate and "#SBATCH --ntasks-per-node=1" in evaluate
    sample = next(out.glob("sample_*.sbatch")).read_text()  # sampling splits its seeds across the ranks
    assert "#SBATCH --gpus-per-node=2" in sample and "#SBATCH --ntasks-per-node=2" in sample
    submit = (out / "submit.sh").read_text().splitlines()
    trains = [line for line in submit if line.startswith("train_")]
    assert trains and all("--dependency=afterok:$annotate_" in line for line in trains)
    assert any(line.startswith("mix_") and "--dependency" not in line for line in submit)
    assert not (runs / "train").exists()  # nothing submitted, nothing run


def test_local_executor_jobs_give_the_sequential_results(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(name="launch", results=tmp_path / "jobs"))
    jobs = run_cli("run", str(suite), "--runs", str(tmp_path / "runs"), "--launcher", "local")
    assert jobs.returncode == 0, jobs.stdout[-2000:] + jobs.stderr[-2000:]
    assert "11 local jobs finished, 0 failed" in jobs.stdout
    assert len(list((tmp_path / "runs").glob("*/*/slurm.json"))) == 11  # job id and log path per stage
    sequential = run_cli("run", str(suite), "--runs", str(tmp_path / "seq"), "--results", str(tmp_path / "seq_r"))
    assert sequential.returncode == 0, sequential.stderr
    assert numbers_of(tmp_path / "jobs" / "results.csv") == numbers_of(tmp_path / "seq_r" / "results.csv")
