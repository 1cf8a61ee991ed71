"""Size + sha256 records of files: the one way a done marker or a cache vouches for a file.

A record is ``[size in bytes, sha256 hex digest]``. Stage done markers (engine/store.py) keep one per
output; the reference-feature cache (metrics/features.py) one per cached array, in a JSON file beside
it. Whoever reads such a file first asks ``problem``: a record that is not a well-formed pair is as
bad as a file that no longer matches it, and either way the file is recomputed, never served.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ambient_bench import fileio

_HEX = re.compile(r"[0-9a-f]{64}")


def record(path: Path) -> list[Any]:
    """``[size, sha256]`` of the file at ``path``."""
    return [Path(path).stat().st_size, fileio.sha256_file(Path(path))]


def well_formed(entry: Any) -> bool:
    """Whether ``entry`` is a record: a non-negative int size and a 64-digit lowercase hex sha256."""
    return (isinstance(entry, (list, tuple)) and len(entry) == 2 and type(entry[0]) is int and entry[0] >= 0
            and isinstance(entry[1], str) and _HEX.fullmatch(entry[1]) is not None)


def problem(path: Path, entry: Any, when: str, hashes: bool = True) -> str | None:
    """Why the file at ``path`` does not match its record ``entry`` (written ``when``), naming it; None
    when it does. Sizes are always compared, hashes when ``hashes``."""
    path = Path(path)
    if not well_formed(entry):
        return f"the record of {path} is malformed ({str(entry)[:80]})"
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != entry[0]:
        return f"{path} has {size} bytes, {entry[0]} {when}"
    if hashes and fileio.sha256_file(path) != entry[1]:
        return f"{path} changed {when.replace('when', 'after', 1)} (sha256 differs)"
    return None
