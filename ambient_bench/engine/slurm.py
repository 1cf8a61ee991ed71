"""SLURM submission in a bounded number of jobs: one job array per stage kind and dependency wave.

A stage's wave is 0 when every input is done, else one more than the latest wave among its inputs
not done yet. The stages of one kind in one wave ask for the same resources, so they become one job
array (``--array=0-N``, split in several when N exceeds the cluster's ``max_array_size``): task i
runs line i of the array's stage list. An array depends on the arrays that hold its stages' inputs
(``--dependency=afterany:...``), so it starts when they have all ended, succeeded or not, and each
task checks its own stage's inputs first: a stage whose input failed, was cancelled or timed out
fails in seconds with that reason in its status (``status`` shows it as blocked), while the other
tasks of the array run. (``afterok`` would instead cancel the whole next wave for one failed
stage; ``--kill-on-invalid-dep=yes`` is set too, so a dependency SLURM can no longer resolve cancels
rather than pends forever.) Re-running ``run --launcher slurm`` submits what is still not done:
an interrupted stage resumes from its checkpoint.

The scripts are written in full before anything is submitted, and what is submitted is exactly
what ``--dry-run`` writes: the venv's python, the environment the stages read (data, caches,
weights, offline switches) and ``cd`` to this folder are in each script.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ambient_bench import fileio
from ambient_bench.engine.cells import Stage
from ambient_bench.engine.runner import Graph
from ambient_bench.engine.store import JOB, RunStore
from ambient_bench.errors import UserError

ENV_VARS = ("AMBIENT_BENCH_DATA", "AMBIENT_BENCH_CACHE", "AMBIENT_BENCH_IN_MEMORY_GB", "AMBIENT_BENCH_LOADER_WORKERS",
            "AMBIENT_BENCH_LOCK_TIMEOUT", "TORCH_HOME", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
            "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME", "PYTHONPATH")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Array:
    """The stages of one kind in one wave (or a slice of them): one job array."""
    wave: int
    kind: str
    part: int
    stages: list[Stage]
    after: list["Array"] = field(default_factory=list)
    job_id: str = ""
    suite: str = ""

    @property
    def name(self) -> str:
        return f"w{self.wave}_{self.kind}" + (f"_{self.part}" if self.part else "")

    @property
    def job_name(self) -> str:
        """What squeue shows: ab-<suite>-w<wave>_<kind>."""
        return f"ab-{self.suite}-{self.name}" if self.suite else f"ab-{self.name}"


def waves(graph: Graph, store: RunStore) -> dict[tuple[str, str], int]:
    """(kind, key) → wave of every stage that is not done."""
    wave: dict[tuple[str, str], int] = {}
    for stage in graph.stages:  # dependencies come first
        if store.state(stage.kind, stage.key) == "done":
            continue
        below = [wave[(d.kind, d.key)] for d in stage.deps.values() if (d.kind, d.key) in wave]
        wave[(stage.kind, stage.key)] = 1 + max(below) if below else 0
    return wave


def plan_arrays(graph: Graph, store: RunStore, max_array_size: int = 1000, suite: str = "") -> list[Array]:
    """The job arrays that run every stage not done, in submission order (dependencies first)."""
    wave = waves(graph, store)
    groups: dict[tuple[int, str], list[Stage]] = {}
    for stage in graph.stages:
        if (stage.kind, stage.key) in wave:
            groups.setdefault((wave[(stage.kind, stage.key)], stage.kind), []).append(stage)
    arrays, home = [], {}
    for (w, kind), stages in sorted(groups.items(), key=lambda item: item[0][0]):
        for part, start in enumerate(range(0, len(stages), max_array_size)):
            array = Array(w, kind, part, stages[start:start + max_array_size], suite=suite)
            for stage in array.stages:
                home[(stage.kind, stage.key)] = array
            arrays.append(array)
    for array in arrays:
        after = {id(home[(d.kind, d.key)]): home[(d.kind, d.key)] for s in array.stages for d in s.deps.values()
                 if (d.kind, d.key) in home}
        array.after = sorted(after.values(), key=lambda a: (a.wave, a.name))
    return arrays


def one_line(value: Any, what: str) -> str:
    """A value written into a job script: never a line break or another control character."""
    text = str(value)
    if _CONTROL.search(text):
        raise UserError(f"{what}={text!r}: a value written into a job script must be one line without control "
                        f"characters; fix it")
    return text


def job_environment(cluster: dict[str, Any]) -> dict[str, str]:
    """What every job exports: the variables of ENV_VARS set here, then the cluster file's ``env``."""
    env = {name: os.environ[name] for name in ENV_VARS if os.environ.get(name)}
    env.update(cluster["env"])
    bad = [k for k in env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
    if bad:
        raise UserError(f"cluster file env: {bad[0]!r} is not a variable name (letters, digits, _); fix it")
    return {k: one_line(v, f"${k}") for k, v in env.items()}


def script(array: Array, res: dict[str, Any], tasks: int, command: list[str], logs: Path,
           cluster: dict[str, Any]) -> str:
    """The sbatch script of one array; every value checked to be one line."""
    throttle = f"%{cluster['array_parallel']}" if cluster["array_parallel"] else ""
    options = {"job-name": array.job_name, "array": f"0-{len(array.stages) - 1}{throttle}",
               "nodes": res["nodes"], "ntasks-per-node": tasks, "cpus-per-task": res["cpus"],
               "gpus-per-node": res["gpus"] or None, "mem": f"{res['mem_gb']}G", "time": res["time_min"],
               "partition": res["partition"], "account": res["account"], "qos": res["qos"],
               "constraint": res["constraint"], "output": str(logs / "%x_%A_%a.out"),
               "open-mode": "append", "kill-on-invalid-dep": "yes", "chdir": os.getcwd()}
    lines = ["#!/bin/bash", f"# ambient_bench: wave {array.wave}, {len(array.stages)} {array.kind} stages, one per "
             f"array task (the list: {command[-1].lstrip('@')})"]
    for name, value in options.items():
        if value is not None:
            text = one_line(value, f"resources.{array.kind}.{name}")
            if re.search(r"\s", text) and name not in ("output", "chdir"):
                raise UserError(f"resources.{array.kind}.{name}={text!r}: a SLURM option value has no spaces; fix it")
            lines.append(f"#SBATCH --{name}={shlex.quote(text) if name in ('output', 'chdir') else text}")
    lines += ["set -eo pipefail"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in job_environment(cluster).items()]
    # submitit's JobEnvironment (run_stage's torch.distributed set-up for several tasks) knows a SLURM job by this
    lines += ["export PYTHONUNBUFFERED=1 SUBMITIT_EXECUTOR=slurm"]
    lines += [one_line(line, "cluster file setup") for line in cluster["setup"]]
    lines.append("srun --unbuffered " + shlex.join(one_line(c, "command") for c in command))
    return "\n".join(lines) + "\n"


def stage_ident(stage: Stage) -> str:
    return f"{stage.kind}:{stage.key[:16]}"


def write_arrays(arrays: list[Array], resources: dict[str, dict[str, Any]], tasks: dict[str, int],
                 cluster: dict[str, Any], base_command: list[str], out: Path) -> dict[str, Path]:
    """Every array's script and stage list under ``out`` (all built first: a bad value writes nothing)."""
    texts: dict[str, str] = {}
    for array in arrays:
        listing = out / f"{array.name}.stages"
        texts[f"{array.name}.stages"] = "".join(stage_ident(s) + "\n" for s in array.stages)
        texts[f"{array.name}.sbatch"] = script(array, resources[array.kind], tasks[array.kind],
                                               [*base_command, "--stage", f"@{listing}"], out / "logs", cluster)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        fileio.write_text(out / name, text)
    return {array.name: out / f"{array.name}.sbatch" for array in arrays}


def dependency(array: Array, ids: dict[str, str]) -> list[str]:
    return [f"--dependency=afterany:{':'.join(ids[a.name] for a in array.after)}"] if array.after else []


def submit_script(arrays: list[Array], scripts: dict[str, Path]) -> str:
    """``submit.sh``: the same sbatch calls ``run --launcher slurm`` makes, in order."""
    lines = ["#!/bin/bash", "# written by `run --launcher slurm --dry-run`: submits every array with its dependencies",
             "set -euo pipefail"]
    for array in arrays:
        deps = dependency(array, {a.name: "$" + a.name for a in arrays})
        lines.append(f"{array.name}=$(sbatch --parsable {' '.join(deps) + ' ' if deps else ''}"
                     f"{shlex.quote(str(scripts[array.name]))})")
        lines.append(f'echo "{array.name}: job ${array.name}"')
    return "\n".join(lines) + "\n"


def sbatch(path: Path, extra: list[str]) -> str:
    """Submit one script; its job id."""
    try:
        proc = subprocess.run(["sbatch", "--parsable", *extra, str(path)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise UserError("--launcher slurm: sbatch not found on this machine (submit from a login node, or use "
                        "--dry-run to write the scripts)") from None
    if proc.returncode != 0:
        raise UserError(f"sbatch {path.name} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout.strip().split(";")[0]


def submit_arrays(arrays: list[Array], scripts: dict[str, Path], store: RunStore, log: Callable[[str], None]) -> None:
    """sbatch every array in order; each stage's job id and log path go to its folder and status."""
    ids: dict[str, str] = {}
    for w in sorted({a.wave for a in arrays}):
        parts = []
        for array in (a for a in arrays if a.wave == w):
            array.job_id = ids[array.name] = sbatch(scripts[array.name], dependency(array, ids))
            parts.append(f"{array.kind} ×{len(array.stages)} (job {array.job_id})")
            for i, stage in enumerate(array.stages):
                job = f"{array.job_id}_{i}"
                record = {"job_id": job, "cluster": "slurm", "array": array.name, "wave": w,
                          "log": str(scripts[array.name].parent / "logs" / f"{array.job_name}_{array.job_id}_{i}.out"),
                          "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "depends_on": [a.job_id for a in array.after]}
                d = store.dir(stage.kind, stage.key)
                d.mkdir(parents=True, exist_ok=True)
                fileio.write_json(d / JOB, record)
                if store.holder(stage.kind, stage.key) is None:
                    fileio.write_json(d / "status.json", {"state": "queued", **record})
        after = sorted({a.job_id for arr in arrays if arr.wave == w for a in arr.after})
        log(f"wave {w}: " + ", ".join(parts) + (f"; after {', '.join(after)}" if after else ""))


def queue(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """SLURM's view of these jobs (array tasks as ``A_i``): job id → (state, reason), from sacct where
    accounting is on, else squeue (jobs it still remembers); None where neither answers."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    found: dict[str, tuple[str, str]] | None = None
    for command in (["squeue", "-h", "-r", "-t", "all", "--me", "-o", "%i|%T|%r"],
                    ["sacct", "-n", "-P", "-X", "-o", "JobID,State,Reason", "-j", ",".join(arrays)]):
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.returncode != 0:
            continue
        found = found or {}
        for line in proc.stdout.splitlines():
            bits = line.strip().split("|")
            if len(bits) >= 2 and bits[0].split("_")[0] in arrays:
                found[bits[0]] = (bits[1].split()[0] if bits[1].strip() else "", bits[2] if len(bits) > 2 else "")
    return found


LIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED", "RESIZING")


def describe_job(record: dict[str, Any], status: dict[str, Any], jobs: dict[str, tuple[str, str]] | None
                 ) -> tuple[str, str]:
    """(state, detail) for ``status`` of a stage submitted to SLURM (``record``: its slurm.json) that
    is neither done nor held by a live worker: blocked (an input failed), queued, or ended unfinished
    (cancelled, timeout, failed...: what SLURM says)."""
    job, log = record.get("job_id", "?"), record.get("log", "?")
    if status.get("state") == "blocked":
        return "blocked", f"{status.get('line', 'an input failed')} (job {job}); `run --launcher slurm` re-submits it"
    if status.get("state") == "failed":
        return "failed", f"{(status.get('line') or status.get('error', ''))[:160]} (job {job}, log {log})"
    if jobs is None:  # no SLURM commands here: what was recorded
        return "queued", f"job {job}, log {log}"
    state, reason = jobs.get(job, ("", ""))
    if state in LIVE:
        return "queued", f"job {job} {state.lower()}" + (f" ({reason})" if reason and reason != "None" else "") + \
            f", log {log}"
    return (state.lower() or "ended"), (f"job {job} ended ({state.lower() or 'no longer queued'}) without finishing "
                                         f"the stage; log {log}; `run --launcher slurm` re-submits it"
                                         + (" (it resumes from its checkpoint)" if status.get("state") else ""))


def job_record(store: RunStore, stage: Stage) -> dict[str, Any] | None:
    """The stage's slurm.json when a SLURM submission wrote it, else None."""
    import json

    try:
        record = json.loads((store.dir(stage.kind, stage.key) / JOB).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("cluster") == "slurm" and record.get("job_id") else None
