"""Content fingerprints of data on disk, so stage keys follow the images, not where they live.

A folder's fingerprint is the sha256 of its manifest: (relative path, size, sha256) of every
file read. Hashing a million images on every ``plan`` would dominate, so each file's hash is
cached in ``$AMBIENT_BENCH_CACHE/manifests/`` (default ``~/.cache/ambient_bench``) under its
(size, mtime); only new or changed files are read again. Within one process a fingerprint is
remembered until ``forget()`` (called before every graph is built), so a suite of many cells
stats the folder once.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from ambient_bench import fileio

_MEMO: dict[tuple, str] = {}


def cache_dir() -> Path:
    env = os.environ.get("AMBIENT_BENCH_CACHE")
    return Path(os.path.expanduser(env)) if env else Path.home() / ".cache" / "ambient_bench"


def forget() -> None:
    """Drop the in-process fingerprints (files may have changed since)."""
    _MEMO.clear()


def file_hashes(root: Path, files: Sequence[Path]) -> list[str]:
    """sha256 of each file (all under ``root``), re-read only when its size or mtime changed."""
    root = Path(root).absolute()
    store = cache_dir() / "manifests" / (hashlib.sha256(str(root).encode()).hexdigest()[:24] + ".json")
    try:
        cached = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    cached = cached if isinstance(cached, dict) else {}
    fresh, hashes = {}, []
    for path in files:
        rel = Path(path).absolute().relative_to(root).as_posix()
        stat = Path(path).stat()
        entry = cached.get(rel)
        if not (isinstance(entry, list) and len(entry) == 3 and entry[:2] == [stat.st_size, stat.st_mtime_ns]):
            entry = [stat.st_size, stat.st_mtime_ns, fileio.sha256_file(Path(path))]
        fresh[rel] = entry
        hashes.append(entry[2])
    if fresh != {k: cached.get(k) for k in fresh}:
        try:
            fileio.write_json(store, {**cached, **fresh})
        except OSError:  # a read-only home: the fingerprint is still right, only slower next time
            pass
    return hashes


def fingerprint(root: Path, files: Sequence[Path]) -> str:
    """First 16 hex digits of the sha256 of the manifest (relative path, size, sha256) of ``files``."""
    root = Path(root).absolute()
    memo_key = (str(root), tuple(str(f) for f in files))
    if memo_key not in _MEMO:
        lines = [f"{Path(f).absolute().relative_to(root).as_posix()}\0{Path(f).stat().st_size}\0{h}"
                 for f, h in zip(files, file_hashes(root, files))]
        _MEMO[memo_key] = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    return _MEMO[memo_key]
