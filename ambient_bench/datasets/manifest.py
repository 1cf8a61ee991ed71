"""Content fingerprints of data on disk, so stage keys follow the images, not where they live.

A folder's fingerprint is the sha256 of its manifest: (relative path, size, sha256) of every
file read. Hashing a million images on every ``plan`` would dominate, so each file's hash is
cached in ``$AMBIENT_BENCH_CACHE/manifests/`` (default ``~/.cache/ambient_bench``) under its
(size, mtime, ctime, inode): only new or changed files are read again, and a file rewritten with its
mtime restored still changes its ctime. The cache records the sha256 of its own entries; a cache
that does not match it (edited or damaged) is dropped and every file hashed again, and an entry
that is not [size, mtime, ctime, inode, sha256] is replaced. Within one process a fingerprint is
remembered until ``forget()`` (called before every graph is built), so a suite of many cells stats
the folder once.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from ambient_bench import fileio

_MEMO: dict[tuple, str] = {}
_HEX = re.compile(r"[0-9a-f]{64}")


def cache_dir() -> Path:
    env = os.environ.get("AMBIENT_BENCH_CACHE")
    return Path(os.path.expanduser(env)) if env else Path.home() / ".cache" / "ambient_bench"


def forget() -> None:
    """Drop the in-process fingerprints (files may have changed since)."""
    _MEMO.clear()


def file_hashes(root: Path, files: Sequence[Path]) -> list[str]:
    """sha256 of each file (all under ``root``), re-read only when its size, mtime, ctime or inode changed."""
    root = Path(root).absolute()
    store = cache_dir() / "manifests" / (hashlib.sha256(str(root).encode()).hexdigest()[:24] + ".json")
    cached = _read_cache(store)
    fresh, hashes = {}, []
    for path in files:
        rel = Path(path).absolute().relative_to(root).as_posix()
        stat = Path(path).stat()
        seen = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        entry = cached.get(rel)
        if not (isinstance(entry, list) and len(entry) == 5 and entry[:4] == seen and _HEX.fullmatch(str(entry[4]))):
            entry = [*seen, fileio.sha256_file(Path(path))]  # new, changed, or an entry that is not one: replaced
        fresh[rel] = entry
        hashes.append(entry[4])
    if fresh != {k: cached.get(k) for k in fresh}:
        merged = {**cached, **fresh}
        try:
            fileio.write_json(store, {"entries": merged, "sha256": _digest(merged)})
        except OSError:  # a read-only home: the fingerprint is still right, only slower next time
            pass
    return hashes


def _digest(entries: dict) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def _read_cache(store: Path) -> dict:
    """The cache's entries (relative path → [size, mtime_ns, ctime_ns, inode, sha256]); {} when there is none.
    A cache whose entries do not match the sha256 it records (edited or damaged) is dropped whole, with
    one line: every file is hashed again and the cache rewritten."""
    try:
        cached = json.loads(store.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError):
        cached = None
    if isinstance(cached, dict) and isinstance(cached.get("entries"), dict) \
            and cached.get("sha256") == _digest(cached["entries"]):
        return cached["entries"]
    if not (isinstance(cached, dict) and "entries" not in cached):  # not the older format (no record): damaged
        print(f"manifest cache {store} is damaged (its entries do not match their sha256); hashing the files "
              f"again", file=sys.stderr, flush=True)
    return {}


def fingerprint(root: Path, files: Sequence[Path]) -> str:
    """First 16 hex digits of the sha256 of the manifest (relative path, size, sha256) of ``files``."""
    root = Path(root).absolute()
    memo_key = (str(root), tuple(str(f) for f in files))
    if memo_key not in _MEMO:
        lines = [f"{Path(f).absolute().relative_to(root).as_posix()}\0{Path(f).stat().st_size}\0{h}"
                 for f, h in zip(files, file_hashes(root, files))]
        _MEMO[memo_key] = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    return _MEMO[memo_key]
