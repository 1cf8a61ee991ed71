"""Scale-out: SLURM job arrays with the declared resources and dependencies (--dry-run; a real SLURM in
test_slurm_cluster.py), cluster-file limits, and submitit's local executor giving the sequential results."""
from __future__ import annotations

import re
import sys

import pytest

from conftest import REPO, TINY_CELL, run_cli, numbers_of

pytestmark = pytest.mark.slow
pytest.importorskip("submitit")

# training keeps its default 8 GPUs per node: on a machine without GPUs the local executor runs one task
SUITE = TINY_CELL + """resources:
  train: {{cpus: 2, mem_gb: 4, time_min: 30, partition: debug}}
grid:
  method: [clean_only, all_data]
"""


def _dry_run(runs, *extra, env=None):
    proc = run_cli("run", "benchmarks/mini_table2a.yaml", "--runs", str(runs), "--launcher", "slurm", "--dry-run",
                   *extra)
    folders = list(runs.glob("**/_slurm/mini_table2a-*"))  # a tiny profile runs in RUNS/tiny
    return proc, (folders[0] if folders else None)


def test_dry_run_writes_one_array_per_kind_and_wave_with_resources_and_dependencies(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch home"))
    proc, out = _dry_run(runs, "resources.train.gpus=4", "resources.train.nodes=2", "resources.train.partition=gpu",
                         "resources.all.account=lab", "resources.evaluate.time_min=30", "resources.sample.gpus=2")
    assert proc.returncode == 0, proc.stderr
    waves = [line for line in proc.stdout.splitlines() if line.startswith("wave ")]
    assert len(waves) == 5 and "train ×10" in proc.stdout  # one line per wave, not one per stage
    scripts = sorted(p.name for p in out.glob("*.sbatch"))
    assert scripts == ["w0_metric_setup.sbatch", "w0_mix.sbatch", "w1_annotate.sbatch", "w2_train.sbatch",
                       "w3_sample.sbatch", "w4_evaluate.sbatch"]
    train = (out / "w2_train.sbatch").read_text()
    for line in ("#SBATCH --gpus-per-node=4", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=2880", "#SBATCH --array=0-9",
                 "#SBATCH --kill-on-invalid-dep=yes", f"#SBATCH --output={out}/logs/%x_%A_%a.out",
                 "export HF_HUB_OFFLINE=1", f"export TORCH_HOME='{tmp_path / 'torch home'}'",
                 "export PYTHONUNBUFFERED=1 SUBMITIT_EXECUTOR=slurm"):
        assert line in train
    assert re.search(r"srun --unbuffered \S*python\S* -m ambient_bench stage \S*mini_table2a\.yaml .*"
                     r"--stage @\S*w2_train\.stages", train)
    assert sys.executable in train  # the venv's python, not whatever `python` a compute node finds
    assert len((out / "w2_train.stages").read_text().split()) == 10
    evaluate = (out / "w4_evaluate.sbatch").read_text()
    assert "#SBATCH --time=30" in evaluate and "#SBATCH --ntasks-per-node=1" in evaluate
    assert "#SBATCH --account=lab" in evaluate  # resources.all reaches every kind
    sample = (out / "w3_sample.sbatch").read_text()  # sampling splits its seeds across the ranks
    assert "#SBATCH --gpus-per-node=2" in sample and "#SBATCH --ntasks-per-node=2" in sample
    assert "--gpus-per-node" not in (out / "w0_mix.sbatch").read_text()
    submit = (out / "submit.sh").read_text()
    assert "w2_train=$(sbatch --parsable --dependency=afterany:$w1_annotate " in submit
    assert "w4_evaluate=$(sbatch --parsable --dependency=afterany:$w0_metric_setup:$w3_sample " in submit
    assert "w0_mix=$(sbatch --parsable " + repr(str(out / "w0_mix.sbatch")).strip("'") in submit
    assert not (runs / "train").exists()  # nothing submitted, nothing run


def test_a_task_of_a_several_task_job_joins_torch_distributed(monkeypatch):
    """What the job scripts export is what run_stage needs to see its job's tasks (submitit's JobEnvironment)."""
    from ambient_bench.engine.launch import _job_tasks

    for name, value in {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "4", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
                        "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert _job_tasks() == 1  # without the export every task would run the stage alone
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert _job_tasks() == 4


def test_tiny_profile_asks_for_little(tmp_path):
    proc, out = _dry_run(tmp_path / "runs", "--profile", "tiny")
    assert proc.returncode == 0, proc.stderr
    train = next(out.glob("w*_train.sbatch")).read_text()
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --mem=16G", "#SBATCH --time=60",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --nodes=1"):
        assert line in train


def test_cluster_file_gives_defaults_and_refuses_requests_over_a_limit(tmp_path, monkeypatch):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("partition: gpu\ncpu_partition: cpu\naccount: lab\nqos: normal\narray_parallel: 4\n"
                       "setup: ['module load cuda']\nenv: {NCCL_DEBUG: WARN}\npartitions:\n"
                       "  gpu: {max_time_min: 1440, gpus_per_node: 8, mem_gb: 480}\n  cpu: {gpus_per_node: 0}\n")
    monkeypatch.setenv("AMBIENT_BENCH_CLUSTER", str(cluster))
    proc, out = _dry_run(tmp_path / "runs")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "resources.train.time_min=2880 is over partition gpu's time limit (max_time_min: 1440 in" in proc.stderr
    assert out is None  # nothing written
    proc, out = _dry_run(tmp_path / "runs", "resources.train.time_min=1440")
    assert proc.returncode == 0, proc.stderr
    train, mix = (out / "w2_train.sbatch").read_text(), (out / "w0_mix.sbatch").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=normal", "#SBATCH --array=0-9%4",
                 "module load cuda", "export NCCL_DEBUG=WARN"):
        assert line in train
    assert "#SBATCH --partition=cpu" in mix  # no GPU asked: the CPU partition
    proc, _ = _dry_run(tmp_path / "other", "resources.train.partition=nope", "--cluster", str(cluster))
    assert proc.returncode == 2 and "resources.train.partition=nope: not a partition of the cluster file" in proc.stderr


def test_a_value_cannot_add_lines_to_a_job_script(tmp_path, monkeypatch):
    proc, out = _dry_run(tmp_path / "runs", "resources.train.partition=gpu\n#SBATCH --uid=0")
    assert proc.returncode == 2 and "must be one line without control characters" in proc.stderr, proc.stderr
    assert out is None or not list(out.glob("*.sbatch"))
    monkeypatch.setenv("AMBIENT_BENCH_DATA", "/data\nrm -rf /")
    proc, out = _dry_run(tmp_path / "runs2")
    assert proc.returncode == 2 and "$AMBIENT_BENCH_DATA" in proc.stderr, proc.stderr
    monkeypatch.delenv("AMBIENT_BENCH_DATA")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("env: {'A=1; rm -rf /; B': x}\n")
    proc, _ = _dry_run(tmp_path / "runs3", "--cluster", str(cluster))
    assert proc.returncode == 2 and "is not a variable name" in proc.stderr, proc.stderr


def test_table2a_at_full_size_is_a_few_dozen_submissions(tmp_path, monkeypatch):
    from ambient_bench.config.suite import load_suite
    from ambient_bench.datasets.standins import write_standins
    from ambient_bench.engine.runner import build_graph
    from ambient_bench.engine.slurm import plan_arrays
    from ambient_bench.engine.store import RunStore

    write_standins(tmp_path / "data", per_class=2)
    monkeypatch.setenv("AMBIENT_BENCH_DATA", str(tmp_path / "data"))
    graph = build_graph(load_suite(REPO / "benchmarks/paper/table2a_cifar_blur.yaml"))
    arrays = plan_arrays(graph, RunStore(tmp_path / "runs"))
    assert len(graph.stages) > 900 and len(arrays) <= 24
    assert sum(len(a.stages) for a in arrays) == len(graph.stages)
    where = {(s.kind, s.key): a for a in arrays for s in a.stages}
    for array in arrays:  # every input lies in an earlier wave that this array waits for
        for stage in array.stages:
            for dep in stage.deps.values():
                assert where[(dep.kind, dep.key)].wave < array.wave and where[(dep.kind, dep.key)] in array.after


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


def test_resources_for_every_kind_under_all_and_the_tiny_caps():
    from ambient_bench.config.resources import for_profile, resolve_resources
    from ambient_bench.params import ParamError

    res = resolve_resources({"all": {"gpus": 0, "partition": "cpu"}, "train": {"gpus": 2}})
    assert res["train"]["gpus"] == 2 and res["sample"]["gpus"] == 0 and res["mix"]["partition"] == "cpu"
    with pytest.raises(ParamError, match="unknown key 'gpu'"):
        resolve_resources({"all": {"gpu": 1}})
    full = resolve_resources({})
    tiny = for_profile(full, "tiny")["train"]
    assert (full["train"]["gpus"], full["train"]["mem_gb"], full["train"]["time_min"]) == (8, 480, 2880)
    assert (tiny["gpus"], tiny["nodes"], tiny["cpus"], tiny["mem_gb"], tiny["time_min"]) == (1, 1, 4, 16, 60)
    assert for_profile(full, "full") == full


def test_an_array_task_whose_input_failed_is_blocked_and_status_says_why(tmp_path, monkeypatch, capsys):
    import json

    from ambient_bench.cli import main
    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.launch import run_stage
    from ambient_bench.engine.runner import build_graph
    from ambient_bench.engine.store import RunStore
    from ambient_bench.errors import UserError

    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_CELL.format(name="blocked", results=tmp_path / "results"))
    runs = tmp_path / "runs"
    graph = build_graph(load_suite(suite))
    annotate = next(s for s in graph.stages if s.kind == "annotate")  # what training reads
    train = next(s for s in graph.stages if s.kind == "train")
    store = RunStore(runs)
    for stage, job in ((annotate, "7_0"), (train, "9_0")):  # as a submission records them
        store.dir(stage.kind, stage.key).mkdir(parents=True)
        record = {"job_id": job, "cluster": "slurm", "log": f"/logs/{job}.out"}
        (store.dir(stage.kind, stage.key) / "slurm.json").write_text(json.dumps(record))
        (store.dir(stage.kind, stage.key) / "status.json").write_text(json.dumps({"state": "queued", **record}))
    failed = {"state": "failed", "line": "disk full"}
    (store.dir("annotate", annotate.key) / "status.json").write_text(json.dumps(failed))
    listing = tmp_path / "w1_train.stages"
    listing.write_text(f"annotate:{'0' * 16}\ntrain:{train.key[:16]}\n")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    with pytest.raises(UserError, match=f"not run: its input annotate {annotate.key[:16]} failed \\(disk full\\)"):
        run_stage(str(suite), [], "full", str(runs), f"@{listing}")
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue here: status says what the store recorded
    assert main(["status", str(suite), "--runs", str(runs)]) == 1
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.split()[:1]}
    assert " failed " in rows["annotate"] and "disk full (job 7_0, log /logs/7_0.out)" in rows["annotate"]
    assert " blocked " in rows["train"]
    assert f"input annotate {annotate.key[:16]} failed (disk full) (job 9_0)" in rows["train"]
