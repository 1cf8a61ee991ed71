"""The cluster file: what a SLURM site asks of every job, and the limits of its partitions.

Read from ``run --cluster FILE``, else ``$AMBIENT_BENCH_CLUSTER``, else
``$XDG_CONFIG_HOME/ambient_bench/cluster.yaml`` (``~/.config/ambient_bench/cluster.yaml``) when it
exists; no file means no defaults and no limits. Example::

    partition: gpu            # default partition of every stage
    cpu_partition: cpu        # stages that ask for no GPU (mixing) go here instead
    account: mylab
    qos: normal
    max_array_size: 1000      # SLURM's MaxArraySize - 1 (bigger waves become several arrays)
    array_parallel: 64        # at most this many tasks of one array run at once (--array=...%64)
    setup: ["module load cuda/12.1"]   # shell lines run before the stage, e.g. environment modules
    env: {NCCL_DEBUG: WARN}            # exported in every job script
    partitions:
      gpu: {max_time_min: 2880, gpus_per_node: 8, mem_gb: 480, cpus_per_node: 64}
      cpu: {max_time_min: 1440, gpus_per_node: 0, mem_gb: 256, cpus_per_node: 128}

A request over a partition's limit is a one-line error before anything is submitted.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ambient_bench.config.resources import slurm_name
from ambient_bench.errors import UserError
from ambient_bench.params import Param, ParamError, resolve_params

ENV_VAR = "AMBIENT_BENCH_CLUSTER"
LIMITS = {
    "max_time_min": Param(None, "longest time limit, minutes", kind=int, ge=1, nullable=True),
    "gpus_per_node": Param(None, "GPUs per node (0: a CPU partition)", kind=int, ge=0, nullable=True),
    "mem_gb": Param(None, "memory per node, GB", kind=int, ge=1, nullable=True),
    "cpus_per_node": Param(None, "CPUs per node", kind=int, ge=1, nullable=True),
    "max_nodes": Param(None, "nodes per job", kind=int, ge=1, nullable=True),
}
SPEC = {
    "partition": Param(None, "default partition", kind=str, nullable=True, check=slurm_name),
    "cpu_partition": Param(None, "partition of stages that ask for no GPU", kind=str, nullable=True,
                           check=slurm_name),
    "account": Param(None, "SLURM account", kind=str, nullable=True, check=slurm_name),
    "qos": Param(None, "SLURM quality of service", kind=str, nullable=True, check=slurm_name),
    "max_array_size": Param(1000, "tasks per job array at most", kind=int, ge=1),
    "array_parallel": Param(None, "tasks of one array running at once", kind=int, ge=1, nullable=True),
    "setup": Param([], "shell lines run before the stage", kind=list),
    "env": Param({}, "variables exported in every job", kind=dict),
    "partitions": Param({}, "partition → its limits", kind=dict),
}
# (resource setting, partition limit, what it is); cpus are checked per node (cpus × tasks per node)
CHECKS = (("time_min", "max_time_min", "time limit"), ("gpus", "gpus_per_node", "GPUs per node"),
          ("mem_gb", "mem_gb", "memory per node"), ("nodes", "max_nodes", "nodes"))


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ambient_bench" / "cluster.yaml"


def load_cluster(path: str | None = None) -> dict[str, Any]:
    """The cluster file's settings with every default filled in (``source``: the file, or None)."""
    explicit = path or os.environ.get(ENV_VAR)
    file = Path(explicit) if explicit else default_path()
    if not file.is_file():
        if explicit:
            raise UserError(f"cluster file {file} not found (from {'--cluster' if path else '$' + ENV_VAR}); "
                            f"write one (see ambient_bench/config/cluster.py) or leave it out")
        return {**resolve_params(SPEC, {}), "source": None}
    try:
        given = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        out = resolve_params(SPEC, given, what=f"cluster file {file}")
        for name in out["partitions"]:  # a partition's name is what a stage's partition must equal
            problem = slurm_name(str(name))
            if problem:
                raise ParamError(("partitions", name), problem)
        out["partitions"] = {str(name): resolve_params(LIMITS, limits or {}, ("partitions", name),
                                                       what=f"limits of partition {name}")
                             for name, limits in out["partitions"].items()}
    except yaml.YAMLError as err:
        raise UserError(f"cluster file {file}: not valid YAML ({str(err).splitlines()[0]})") from None
    except ParamError as err:
        where = ".".join(map(str, err.key))
        raise UserError(f"cluster file {file}: {where + ': ' if where else ''}{err.message}") from None
    if not all(isinstance(line, str) for line in out["setup"]):
        raise UserError(f"cluster file {file}: setup: expected a list of shell lines")
    out["env"] = {str(k): str(v) for k, v in out["env"].items()}
    return {**out, "source": str(file)}


def apply_cluster(resources: dict[str, dict[str, Any]], cluster: dict[str, Any],
                  tasks: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Each stage kind's resources with the cluster's partition / account / qos filled in where the
    suite leaves them unset, checked against its partition's limits (``tasks``: tasks per node of
    each kind). A request over a limit is a one-line UserError."""
    out = {}
    where = f" in {cluster['source']}" if cluster["source"] else ""
    for kind, res in resources.items():
        res = dict(res)
        if not res["partition"]:
            res["partition"] = (cluster["cpu_partition"] if res["gpus"] == 0 else None) or cluster["partition"]
        res["account"] = res["account"] or cluster["account"]
        res["qos"] = res["qos"] or cluster["qos"]
        limits = cluster["partitions"].get(res["partition"]) if res["partition"] else None
        if res["partition"] and cluster["partitions"] and limits is None:
            raise UserError(f"resources.{kind}.partition={res['partition']}: not a partition of the cluster "
                            f"file{where} (it lists {', '.join(cluster['partitions'])})")
        for setting, limit, what in CHECKS if limits else ():
            if limits[limit] is not None and res[setting] > limits[limit]:
                raise UserError(f"resources.{kind}.{setting}={res[setting]} is over partition {res['partition']}'s "
                                f"{what} ({limit}: {limits[limit]}{where}); set resources.{kind}.{setting}="
                                f"{limits[limit]} or pick another partition (resources.{kind}.partition=...)")
        if limits and limits["cpus_per_node"] is not None and res["cpus"] * tasks[kind] > limits["cpus_per_node"]:
            raise UserError(f"resources.{kind}.cpus={res['cpus']} × {tasks[kind]} tasks per node is over partition "
                            f"{res['partition']}'s cpus_per_node ({limits['cpus_per_node']}{where}); "
                            f"lower resources.{kind}.cpus")
        out[kind] = res
    return out
