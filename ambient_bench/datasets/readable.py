"""Every image of a folder dataset decodes: checked when its manifest is taken (``plan`` and ``run``, before
any work), so a truncated or mislabelled file is one line naming it, not a failed mix stage.

Decoding a large folder takes a while, so the content hashes of the files that decoded are remembered in
``$AMBIENT_BENCH_CACHE/readable/`` (one file per folder): a file is decoded again only when its bytes change.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

from ambient_bench import fileio
from ambient_bench.datasets import manifest
from ambient_bench.errors import UserError


def _decodes(path: Path) -> str | None:
    """None when PIL decodes the whole image; else why not."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's warnings (a large image, an odd profile) are not failures
            with Image.open(path) as picture:
                picture.load()
                if picture.width < 1 or picture.height < 1:
                    return "it has no pixels"
    except Exception as err:  # noqa: BLE001 - whatever PIL raises, the file cannot be read as an image
        return " ".join(f"{type(err).__name__}: {err}".split())[:160]
    return None


def require_files(files: Sequence[Path], what: str) -> None:
    """Raise a one-line UserError naming the first of ``files`` that is not a readable file (a link to nothing,
    say): checked before the manifest pass hashes them."""
    for path in map(Path, files):
        if path.is_file() and os.access(path, os.R_OK):
            continue
        why = (f"a link to {os.readlink(path)}, which does not exist" if path.is_symlink() and not path.exists()
               else "not a file" if path.exists() and not path.is_file() else "it cannot be read")
        raise UserError(f"{what}: {path} is not a readable image ({why}); remove or replace it")


def require_readable(root: Path, files: Sequence[Path], what: str) -> None:
    """Raise a one-line UserError naming the first of ``files`` (all under ``root``) that does not decode."""
    root = Path(root).absolute()
    store = manifest.cache_dir() / "readable" / (hashlib.sha256(str(root).encode()).hexdigest()[:24] + ".json")
    try:
        known = set(json.loads(store.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        known = set()
    hashes = manifest.file_hashes(root, files)
    fresh = set()
    for path, digest in zip(files, hashes):
        if digest in known:
            continue
        problem = _decodes(Path(path))
        if problem:
            raise UserError(f"{what}: {path} is not a readable image ({problem}); remove or replace it")
        fresh.add(digest)
    if fresh:
        try:  # a read-only home: checked again next time, nothing else
            fileio.write_json(store, sorted(known | fresh))
        except OSError:
            pass
