"""What each kind of stage asks a SLURM cluster for (the suite's ``resources:`` section).

Training gets the most (a node of GPUs, one task per GPU under torch.distributed); classifier
training, annotation, sampling and evaluation one GPU; mixing none. A suite overrides any of it
per stage kind, or for every kind at once under ``all`` (a kind's own setting wins), and so does
the command line (``resources.train.gpus=4``, ``resources.all.partition=gpu``).

These are the sizes of the full profile. The tiny profile runs every stage in seconds to minutes,
so its requests are capped (``TINY_CAPS``: at most one GPU on one node, 4 CPUs, 16 GB, one hour).
"""
from __future__ import annotations

import re
from typing import Any

from ambient_bench.params import Param, ParamError, resolve_params

STAGE_KINDS = ("mix", "classifier", "annotate", "train", "sample", "metric_setup", "evaluate")
ALL = "all"  # settings for every stage kind
TINY_CAPS = {"gpus": 1, "nodes": 1, "cpus": 4, "mem_gb": 16, "time_min": 60}


# What a SLURM partition, account, qos or feature name is made of: a value lands in an sbatch script, so a line
# break, a space, a quote or a shell character there is refused at plan time (constraints may combine features
# with & and |, which #SBATCH lines never hand to a shell)
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.,:+=@-]{1,128}")
_SLURM_CONSTRAINT = re.compile(r"[A-Za-z0-9_.,:+=@&|*\[\]()-]{1,512}")


def slurm_name(value: str, pattern: re.Pattern = _SLURM_NAME) -> str | None:
    """None for a value SLURM takes as a name; else what is wrong with it (for Param.check)."""
    if pattern.fullmatch(value):
        return None
    allowed = "letters, digits and _ . , : + = @ -" + (" & | * [ ] ( )" if pattern is _SLURM_CONSTRAINT else "")
    return (f"{value!r} is not a SLURM name: use {allowed} only (no spaces, line breaks or shell characters; it "
            f"is written into an sbatch script)")


def _params(gpus: int, cpus: int, mem_gb: int, time_min: int) -> dict[str, Param]:
    return {
        "gpus": Param(gpus, "GPUs per node (training: one task per GPU)", kind=int, ge=0, le=64),
        "nodes": Param(1, "nodes (training across nodes when > 1)", kind=int, ge=1, le=1024),
        "cpus": Param(cpus, "CPUs per task", kind=int, ge=1, le=1024),
        "mem_gb": Param(mem_gb, "memory per node, GB", kind=int, ge=1, le=65536),
        "time_min": Param(time_min, "time limit in minutes", kind=int, ge=1, le=525600),
        "partition": Param(None, "SLURM partition (default: the cluster file's)", kind=str, nullable=True,
                           check=slurm_name),
        "account": Param(None, "SLURM account (default: the cluster file's)", kind=str, nullable=True,
                         check=slurm_name),
        "constraint": Param(None, "SLURM constraint (e.g. a GPU type)", kind=str, nullable=True,
                            check=lambda v: slurm_name(v, _SLURM_CONSTRAINT)),
        "qos": Param(None, "SLURM quality of service (default: the cluster file's)", kind=str, nullable=True,
                     check=slurm_name),
    }


DEFAULTS = {"mix": _params(0, 8, 64, 120), "classifier": _params(1, 8, 64, 1440),
            "annotate": _params(1, 8, 64, 720), "train": _params(8, 8, 480, 2880),
            "sample": _params(1, 8, 64, 720), "metric_setup": _params(1, 8, 64, 240),
            "evaluate": _params(1, 8, 64, 240)}


def resolve_resources(given: Any, key: tuple = ("resources",)) -> dict[str, dict[str, Any]]:
    """The suite's ``resources:`` mapping (stage kind or ``all`` → settings) with every default
    filled in, per stage kind."""
    if not isinstance(given, dict):
        raise ParamError(key, f"expected a mapping of stage kind → settings, got {given!r}")
    resolve_params({kind: Param({}, kind=dict) for kind in (*STAGE_KINDS, ALL)}, given, key, what="'resources'")
    shared = given.get(ALL) or {}
    resolve_params(DEFAULTS["mix"], shared, key + (ALL,), what="resources of every stage kind")  # typos fail here
    return {kind: resolve_params(DEFAULTS[kind], {**shared, **(given.get(kind) or {})}, key + (kind,),
                                 what=f"resources of {kind}")
            for kind in STAGE_KINDS}


def for_profile(resources: dict[str, dict[str, Any]], profile: str) -> dict[str, dict[str, Any]]:
    """What each stage kind asks for at ``profile``: the tiny profile caps every request at TINY_CAPS."""
    if profile == "full":
        return resources
    return {kind: {**res, **{k: min(res[k], cap) for k, cap in TINY_CAPS.items()}} for kind, res in resources.items()}
