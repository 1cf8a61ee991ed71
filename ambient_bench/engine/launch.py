"""Many jobs through submitit: one job per stage, SLURM ``afterok`` dependencies between them.

    python -m ambient_bench run SUITE --launcher slurm [--dry-run]

Each stage kind asks for the resources of the suite's ``resources:`` section
(config/resources.py). A training stage with more than one GPU runs one task per GPU, with the
environment torch.distributed expects (submitit's TorchDistributedEnvironment), across nodes
when ``nodes > 1``. Every job runs ``run_stage``: it waits until its upstream stages are done
(immediate under ``afterok``; how jobs order themselves on submitit's local executor, which has
no dependencies), then executes its stage under the stage's lock like any worker. Job ids and log
paths go into the stage folder (``slurm.json``) and its status (queued), where ``status`` finds
them. ``--dry-run`` writes one sbatch script per stage and a ``submit.sh`` that submits them with
their dependencies, and prints the job graph; nothing is submitted.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ambient_bench import fileio
from ambient_bench.engine.cells import Stage
from ambient_bench.engine.runner import Graph
from ambient_bench.engine.store import JOB, RunStore
from ambient_bench.errors import UserError

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


def stage_command(suite: Path, overrides: list[str], profile: str, runs: Path, stage: Stage) -> list[str]:
    return [sys.executable, "-m", "ambient_bench", "stage", str(Path(suite).absolute()), *overrides,
            "--runs", str(Path(runs).absolute()), "--profile", profile, "--stage", f"{stage.kind}:{stage.key[:16]}"]


def run_stage(suite_path: str, overrides: list[str], profile: str, runs: str, ident: str,
              poll_seconds: float = 2.0) -> dict[str, Any]:
    """Execute one stage of a suite (the body of every job): wait for its inputs, join the
    process group when the job has several tasks, run it under its lock."""
    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.runner import SPLIT_KINDS, build_graph, work_beside_main
    from ambient_bench.engine.stages import WORK, Context
    from ambient_bench import distributed

    if "WORLD_SIZE" not in os.environ and _job_tasks() > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    suite = load_suite(suite_path, overrides, profile=profile)
    graph = build_graph(suite)
    kind, short = ident.split(":", 1)
    matches = [s for s in graph.stages if s.kind == kind and s.key.startswith(short)]
    if len(matches) != 1:
        raise UserError(f"--stage {ident}: no such stage in {suite_path} (see `plan`)")
    stage, store = matches[0], RunStore(Path(runs))
    while any(store.state(d.kind, d.key) != "done" for d in stage.deps.values()):
        failed = [d for d in stage.deps.values() if store.status(d.kind, d.key).get("state") == "failed"
                  and store.holder(d.kind, d.key) is None]
        if failed:
            raise UserError(f"stage {ident}: its input {failed[0].kind} {failed[0].key[:16]} failed")
        time.sleep(poll_seconds)
    distributed.init_from_env()
    ctx = Context(store=store, log=lambda line: print(line, flush=True))
    done = distributed.from_main(store.state(stage.kind, stage.key) == "done")  # every rank takes one branch
    if done:
        return store.summary(stage.kind, stage.key) if distributed.is_main() else {}
    if not distributed.is_main():
        if stage.kind in SPLIT_KINDS:
            work_beside_main(stage, store)
        distributed.barrier()
        return {}
    with distributed.splitting() if stage.kind in SPLIT_KINDS else contextlib.nullcontext():
        summary = store.execute(stage.kind, stage.key, stage.material, stage.runtime,
                                lambda out: WORK[stage.kind](stage, out, ctx))
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
    """One job per stage that is not done, in dependency order; the submitted submitit jobs."""
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


def dry_run(graph: Graph, store: RunStore, resources: dict[str, dict[str, Any]], suite_path: Path,
            overrides: list[str], profile: str, out: Path, log: Callable[[str], None]) -> Path:
    """Write one sbatch script per stage that is not done and ``submit.sh`` (dependencies as afterok);
    print the job graph. Nothing is submitted."""
    _submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    out.mkdir(parents=True, exist_ok=True)
    names: dict[tuple[str, str], str] = {}
    lines = ["#!/bin/bash", "# written by `run --launcher slurm --dry-run`: submits every stage with its dependencies",
             "set -euo pipefail", f"cd {shlex.quote(str(out))}"]
    for stage in graph.stages:
        if store.state(stage.kind, stage.key) == "done":
            continue
        res = resources[stage.kind]
        name = f"{stage.kind}_{stage.key[:16]}"
        command = shlex.join(stage_command(suite_path, overrides, profile, store.root, stage))
        script = _make_sbatch_string(
            command=command, folder=str(out / "logs"), job_name=f"ab-{stage.kind}-{stage.key[:8]}",
            partition=res["partition"], time=res["time_min"], nodes=res["nodes"],
            ntasks_per_node=tasks_per_node(stage, res), cpus_per_task=res["cpus"],
            gpus_per_node=res["gpus"] or None, qos=res["qos"], mem=f"{res['mem_gb']}GB",
            constraint=res["constraint"], account=res["account"])
        fileio.write_text(out / f"{name}.sbatch", script)
        upstream = [names[(d.kind, d.key)] for d in stage.deps.values() if (d.kind, d.key) in names]
        dependency = f"--dependency=afterok:{':'.join('$' + u for u in upstream)} " if upstream else ""
        lines.append(f"{name}=$(sbatch --parsable {dependency}{name}.sbatch)")
        names[(stage.kind, stage.key)] = name
        log(f"{name}: {stage.describe}; {res['nodes']}×{res['gpus']} GPU, {tasks_per_node(stage, res)} tasks/node"
            + (f"; after {', '.join(upstream)}" if upstream else ""))
    fileio.write_text(out / "submit.sh", "\n".join(lines) + "\n")
    os.chmod(out / "submit.sh", 0o755)
    return out / "submit.sh"
