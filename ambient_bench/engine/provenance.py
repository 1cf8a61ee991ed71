"""What computed a stage: code version and commit, library versions, device, when and how long.

Recorded in each stage's ``status.json`` when it finishes, and carried into every result row by
``results.collect`` (stages finished before this was recorded keep what their status says: host,
start and end, hence wall time; the rest reads "unknown").
"""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout this package runs from; (None, None) outside a git checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(dirty)


@functools.lru_cache(maxsize=1)
def device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} × {torch.cuda.device_count()}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()}"


def provenance() -> dict[str, Any]:
    from ambient_bench import __version__

    commit, dirty = git_state()
    return {"code_version": __version__, "git_commit": commit, "git_dirty": dirty, "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": device_name(), "python": platform.python_version()}
