"""Folders the harness writes into (``--runs``, the results folder): checked before any work starts.

A folder must be (or be creatable inside) a writable directory on a normal filesystem: a temporary file is
created and removed in the nearest existing folder (permissions, read-only mounts and full quotas all show
there), and kernel filesystems (``/proc``, ``/sys``, ``/dev``, cgroups, ...) are refused by their type in
``/proc/self/mountinfo``, where files may seem to be created but are no store.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ambient_bench.errors import UserError

# kernel and pseudo filesystems: nothing written there is kept as a file (devtmpfs: /dev, a device table)
SPECIAL_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore",
    "bpf", "configfs", "fusectl", "mqueue", "binfmt_misc", "efivarfs", "selinuxfs", "nsfs", "autofs", "rpc_pipefs",
    "hugetlbfs"})


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040 ...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (the longest mount point above it), or None where there
    is no /proc/self/mountinfo (not Linux)."""
    try:
        text = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    target, best, kind = os.path.realpath(path), "", None
    for line in text.splitlines():
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        mount = _unescape(fields[4])
        after = line.split(" - ", 1)[1].split(" ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, after[0]
    return kind


def require_writable(path: Path, what: str) -> None:
    """``path`` is a folder we can write (or create) on a normal filesystem; else one UserError line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder; pick a folder (it is created if missing)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    kind = filesystem_type(existing)
    if kind in SPECIAL_FILESYSTEMS:
        raise UserError(f"{what} {path} is on a {kind} filesystem ({existing}), which holds no files; pick a folder "
                        f"on a disk, e.g. --runs runs")
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} cannot be written ({existing} is not a writable folder); "
                        f"pick a folder you can write to")
    try:  # what os.access cannot see: a read-only mount, a full disk or quota, an ACL
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".ambient_bench-probe-"):
            pass
    except OSError as err:
        raise UserError(f"{what} {path} cannot be written (a file in {existing} could not be created: "
                        f"{err.strerror or err}); pick a folder you can write to") from None
