"""Jobs through SLURM (job arrays, engine/slurm.py) or submitit's local executor (one job per stage).

    python -m ambient_bench run SUITE --launcher slurm [--dry-run] [--cluster FILE]
    python -m ambient_bench run SUITE --launcher local

Each stage kind asks for the resources of the suite's ``resources:`` section
(config/resources.py), capped at the tiny profile, with the cluster file's defaults and limits
(config/cluster.py). A training stage with more than one GPU runs one task per GPU, with the
environment torch.distributed expects (submitit's TorchDistributedEnvironment), across nodes
when ``nodes > 1``. Every job (or array task) runs ``run_stage``: it checks its stage's inputs,
then executes the stage under the stage's lock like any worker. Job ids and log paths go into
the stage folder (``slurm.json``) and its status (queued), where ``status`` finds them.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ambient_bench import fileio
from ambient_bench.engine.cells import Stage
from ambient_bench.engine.runner import Graph
from ambient_bench.engine.store import JOB, RunStore
from ambient_bench.errors import UserError
from ambient_bench.fencing import LockLost

SLURM_DIR = "_slurm"


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher needs submitit: pip install -e \".[slurm]\" (or pip install submitit)") from None
    return submitit


def tasks_per_node(stage: Stage, res: dict[str, Any], local: bool = False) -> int:
    """One task per GPU (torch.distributed) for the stages whose work splits across ranks; one task
    otherwise. On submitit's local executor, no more tasks than this machine has GPUs (one without)."""
    from ambient_bench.engine.runner import SPLIT_KINDS

    gpus = res["gpus"]
    if local:
        import torch

        gpus = min(gpus, torch.cuda.device_count())
    return max(1, gpus) if stage.kind in SPLIT_KINDS else 1


def stage_command(suite: Path, overrides: list[str], profile: str, runs: Path) -> list[str]:
    """The command of a job, but for ``--stage``: this venv's python, absolute paths."""
    return [sys.executable, "-m", "ambient_bench", "stage", str(Path(suite).absolute()), *overrides,
            "--runs", str(Path(runs).absolute()), "--profile", profile]


def _array_stage(ident: str) -> str:
    """``@FILE``: line $SLURM_ARRAY_TASK_ID of FILE (an array's stage list); any other ident as it is."""
    if not ident.startswith("@"):
        return ident
    index = os.environ.get("SLURM_ARRAY_TASK_ID")
    lines = Path(ident[1:]).read_text(encoding="utf-8").split()
    if index is None or not index.isdigit() or int(index) >= len(lines):
        raise UserError(f"--stage {ident}: needs $SLURM_ARRAY_TASK_ID below {len(lines)} (set by an array job)")
    return lines[int(index)]


def _job_of(store: RunStore, stage: Stage) -> str:
    """The job id recorded for a stage at submission (slurm.json), or '?'."""
    import json

    try:
        return str(json.loads((store.dir(stage.kind, stage.key) / JOB).read_text(encoding="utf-8"))["job_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def _blocked(stage: Stage, store: RunStore, in_array: bool) -> str | None:
    """Why ``stage`` cannot run: an input failed, or (in an array, whose upstream arrays have all
    ended) an input nobody runs is not done; None once every input is done, '' while waiting for
    an input a live worker holds (or, outside an array, one not started yet)."""
    for dep in stage.deps.values():
        if store.state(dep.kind, dep.key) == "done":
            continue
        if store.holder(dep.kind, dep.key) is not None:
            return ""
        status = store.status(dep.kind, dep.key)
        if status.get("state") == "blocked":
            return f"not run: its input {dep.kind} {dep.key[:16]} did not run either"
        if status.get("state") == "failed":
            return f"not run: its input {dep.kind} {dep.key[:16]} failed ({(status.get('line') or '?')[:120]})"
        if in_array:
            return (f"not run: its input {dep.kind} {dep.key[:16]} is not done (its job {_job_of(store, dep)} "
                    f"ended without finishing it)")
        return ""
    return None


def run_stage(suite_path: str, overrides: list[str], profile: str, runs: str, ident: str,
              poll_seconds: float = 2.0) -> dict[str, Any]:
    """Execute one stage of a suite (the body of every job): wait for its inputs, join the
    process group when the job has several tasks, run it under its lock. In an array task whose
    stage cannot run (an input failed or was never finished) the stage is marked blocked, with the
    reason, and the task fails."""
    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.runner import build_graph
    from ambient_bench import distributed

    if "WORLD_SIZE" not in os.environ and _job_tasks() > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    in_array, ident = ident.startswith("@"), _array_stage(ident)
    suite = load_suite(suite_path, overrides, profile=profile)
    graph = build_graph(suite)
    kind, short = ident.split(":", 1)
    matches = [s for s in graph.stages if s.kind == kind and s.key.startswith(short)]
    if len(matches) != 1:
        raise UserError(f"--stage {ident}: no such stage in {suite_path} (see `plan`)")
    stage, store = matches[0], RunStore(Path(runs))
    while (reason := _blocked(stage, store, in_array)) is not None:
        if reason:
            if store.holder(stage.kind, stage.key) is None and int(os.environ.get("RANK", "0")) == 0:
                fileio.write_json(store.dir(stage.kind, stage.key) / "status.json",
                                  {**store.status(stage.kind, stage.key), "state": "blocked", "line": reason,
                                   "failed_at": time.time()})
            raise UserError(f"stage {ident}: {reason}")
        time.sleep(poll_seconds)
    while store.state(stage.kind, stage.key) != "done" and store.holder(stage.kind, stage.key) is not None:
        time.sleep(poll_seconds)  # another worker (an earlier submission) is on it: its result serves
    distributed.init_from_env()
    try:
        return _run_joined(stage, store, poll_seconds)
    finally:
        distributed.shutdown()  # every task leaves the process group, returning or raising


def _run_joined(stage: Stage, store: RunStore, poll_seconds: float) -> dict[str, Any]:
    """``run_stage`` from the process group on."""
    from ambient_bench.engine.runner import SPLIT_KINDS, work_beside_main
    from ambient_bench.engine.stages import WORK, Context
    from ambient_bench import distributed

    ctx = Context(store=store, log=lambda line: print(line, flush=True))
    done = distributed.from_main(store.state(stage.kind, stage.key) == "done")  # every rank takes one branch
    if done:
        return store.summary(stage.kind, stage.key) if distributed.is_main() else {}
    if not distributed.is_main():
        if stage.kind in SPLIT_KINDS:
            work_beside_main(stage, store)
        distributed.barrier()
        return {}
    try:
        with distributed.splitting() if stage.kind in SPLIT_KINDS else contextlib.nullcontext():
            summary = store.execute(stage.kind, stage.key, stage.material, stage.runtime,
                                    lambda out: WORK[stage.kind](stage, out, ctx))
    except LockLost as err:  # this job was frozen (suspended) past the timeout and another worker took the stage
        print(err, flush=True)
        while store.state(stage.kind, stage.key) != "done" and store.holder(stage.kind, stage.key) is not None:
            time.sleep(poll_seconds)
        if store.state(stage.kind, stage.key) != "done":
            raise
        summary = store.summary(stage.kind, stage.key)  # done by the other worker: its result serves
    distributed.barrier()
    return summary


def _job_tasks() -> int:
    """Tasks of this submitit job (SLURM or the local executor); 1 outside a job."""
    try:
        import submitit

        return submitit.JobEnvironment().num_tasks
    except (ImportError, RuntimeError):
        return 1


def _executor_parameters(stage: Stage, res: dict[str, Any], slurm: bool, dependency: str | None) -> dict[str, Any]:
    params = {"name": f"ab-{stage.kind}-{stage.key[:8]}", "timeout_min": res["time_min"], "nodes": res["nodes"],
              "tasks_per_node": tasks_per_node(stage, res, local=not slurm), "cpus_per_task": res["cpus"],
              "mem_gb": res["mem_gb"]}
    if slurm:
        params["gpus_per_node"] = res["gpus"]
        params.update({f"slurm_{k}": res[k] for k in ("partition", "account", "constraint", "qos") if res[k]})
        if dependency:
            params["slurm_additional_parameters"] = {"dependency": dependency}
    return params


def submit(graph: Graph, store: RunStore, resources: dict[str, dict[str, Any]], suite_path: Path,
           overrides: list[str], profile: str, cluster: str, log: Callable[[str], None]) -> list[Any]:
    """One submitit job per stage that is not done, in dependency order (``--launcher local``: this
    machine, no dependencies, jobs wait for their inputs); the submitted submitit jobs."""
    from ambient_bench.config.resources import for_profile

    resources = for_profile(resources, profile)
    submitit = _submitit()
    slurm = cluster == "slurm"
    folder = store.root / SLURM_DIR / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=None if slurm else "local")
    jobs: dict[tuple[str, str], Any] = {}
    for stage in graph.stages:
        if store.state(stage.kind, stage.key) == "done":
            continue
        res = resources[stage.kind]
        upstream = [jobs[(d.kind, d.key)].job_id for d in stage.deps.values() if (d.kind, d.key) in jobs]
        executor.update_parameters(**_executor_parameters(stage, res, slurm,
                                                          "afterok:" + ":".join(upstream) if upstream else None))
        job = executor.submit(run_stage, str(Path(suite_path).absolute()), list(overrides), profile,
                              str(store.root.absolute()), f"{stage.kind}:{stage.key[:16]}")
        jobs[(stage.kind, stage.key)] = job
        record = {"job_id": job.job_id, "cluster": cluster, "log": str(job.paths.stdout),
                  "stderr": str(job.paths.stderr), "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "depends_on": upstream}
        d = store.dir(stage.kind, stage.key)
        fileio.write_json(d / JOB, record)
        if store.holder(stage.kind, stage.key) is None:
            fileio.write_json(d / "status.json", {"state": "queued", **record})
        log(f"job {job.job_id}: {stage.kind} {stage.key[:16]} ({stage.describe})"
            + (f", after {', '.join(upstream)}" if upstream else ""))
    return list(jobs.values())


def submit_slurm(graph: Graph, store: RunStore, resources: dict[str, dict[str, Any]], suite_path: Path,
                 overrides: list[str], profile: str, cluster_file: str | None, dry_run: bool,
                 log: Callable[[str], None]) -> Path:
    """Write one sbatch script per job array (engine/slurm.py) under RUNS/_slurm/<suite>-<time>/,
    and a submit.sh making the same sbatch calls; submit them unless ``dry_run``. The folder."""
    from ambient_bench.config.cluster import apply_cluster, load_cluster
    from ambient_bench.config.resources import for_profile
    from ambient_bench.engine import slurm
    from ambient_bench.engine.slurm import one_line

    cluster = load_cluster(cluster_file)
    arrays = slurm.plan_arrays(graph, store, cluster["max_array_size"], one_line(Path(suite_path).stem, "suite"))
    tasks = {kind: max((tasks_per_node(s, res) for s in graph.stages if s.kind == kind), default=1)
             for kind, res in for_profile(resources, profile).items()}
    resources = apply_cluster(for_profile(resources, profile), cluster, tasks)
    if not arrays:
        log("every stage is done: nothing to submit")
        return store.root / SLURM_DIR
    if not dry_run:
        live = _still_queued(graph, store)
        if live:
            raise UserError(f"{len(live)} stages of this suite still have jobs pending or running (e.g. job "
                            f"{live[0]}): wait for them (`status`) or scancel them, then re-submit")
    out = store.root / SLURM_DIR / f"{Path(suite_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    base = stage_command(suite_path, overrides, profile, store.root)
    scripts = slurm.write_arrays(arrays, resources, tasks, cluster, base, out)
    fileio.write_text(out / "submit.sh", slurm.submit_script(arrays, scripts))
    os.chmod(out / "submit.sh", 0o755)
    stages = sum(len(a.stages) for a in arrays)
    if dry_run:
        for w in sorted({a.wave for a in arrays}):
            log(f"wave {w}: " + ", ".join(f"{a.kind} ×{len(a.stages)}" for a in arrays if a.wave == w))
        log(f"{len(arrays)} job arrays for {stages} stages in {out}/; nothing submitted (`bash {out}/submit.sh` does)")
    else:
        slurm.submit_arrays(arrays, scripts, store, log)
        log(f"submitted {len(arrays)} job arrays for {stages} stages; scripts and logs in {out}/")
    return out


def _still_queued(graph: Graph, store: RunStore) -> list[str]:
    """Job ids of this suite's unfinished stages that SLURM still has pending or running."""
    from ambient_bench.engine import slurm

    records = [slurm.job_record(store, s) for s in graph.stages if store.state(s.kind, s.key) != "done"]
    recorded = [r["job_id"] for r in records if r]
    jobs = slurm.queue(recorded) or {}
    return [j for j in recorded if jobs.get(j, ("",))[0] in slurm.LIVE]
