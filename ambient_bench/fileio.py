"""File writes and reads we can trust.

Writes are atomic (a reader, or a re-run after a kill, never sees a half-written file),
readable as the umask says (a shared cluster's group can read results), and byte-for-byte
deterministic (identical tensors give identical files, so content hashes mean something).
Reads of stored tensors never run code: ``torch.load(weights_only=True)`` admits tensors,
numbers, strings and containers only.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from ambient_bench import fencing
from ambient_bench.errors import UserError

TEMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once: setting the umask to read it would, for that moment, affect files other threads create
_UMASK = _read_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place (inside a stage,
    only while this process still owns the stage: ``fencing.check()`` just before the rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a plain open() would honour the umask
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        fencing.check()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_orphan_temps(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` and below; those removed. Only for a
    folder no live writer uses (a stage folder under its lock)."""
    removed = []
    for path in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def torch_save(path: Path, obj: Any) -> None:
    """Deterministic bytes: saved through a file object, torch names the archive 'archive' instead of
    after the (random) temporary file."""
    import torch  # here, not at import: the light commands (--help, weights list) read and write files too

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(buffer.getvalue()))


@functools.cache
def _numpy_array_globals() -> list[Any]:
    """What a pickled numpy array asks for (torch-fidelity stores its statistics so); an object array's
    items still pass through the same restricted unpickler."""
    import numpy as np

    multiarray = getattr(np, "_core", None) or np.core
    return [multiarray.multiarray._reconstruct, np.ndarray, np.dtype,
            *[type(np.dtype(t)) for t in ("f4", "f8", "f2", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")]]




STORED_FIX = "delete it (a stage recomputes it)"
WEIGHTS_FIX = ("replace it with the right file (a default weights file: delete it, then `python -m ambient_bench "
               "weights fetch`)")


def torch_load(path: Path, what: str = "stored file", fix: str = STORED_FIX) -> Any:
    """A ``.pt`` we wrote (or a weights file a user named: ``fix`` = WEIGHTS_FIX): tensors and plain containers
    only, never code. A file that is not one (truncated, or a pickle asking for anything else) is a UserError
    naming it."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{what} {path} is missing; " + ("delete its stage folder (or re-run) to recompute it"
                                                         if fix == STORED_FIX else fix)) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, IndexError, KeyError, TypeError,
            AttributeError) as err:  # what a cut-short or garbled pickle raises, besides the refusals
        raise UserError(f"{what} {path} is refused: {refusal(err)}; {fix}") from None


def error_line(err: BaseException) -> str:
    """The first line of an error's message; a refusal of torch's safe loader raised where a library called
    ``torch.load`` itself is said in our words (torch's first line advises ``weights_only=False``)."""
    text = str(err).strip()
    if "weights_only" in text:
        return "torch's safe loader refused a file: " + refusal(err)
    return text.splitlines()[0] if text else ""


def refusal(err: BaseException) -> str:
    """Why torch's safe loader (``weights_only``) refused a file, without torch's advice to load it unsafely."""
    text = str(err)
    code = re.search(r"GLOBAL ([\w.]+)", text)
    if code:
        return (f"it is a pickle that asks for {code.group(1)}, code rather than tensors and plain data, "
                f"and pickles that carry code are never loaded")
    if "weights_only" in text or "Unsupported operand" in text:
        return ("it is not a file of tensors and plain data (torch's safe loader, which never runs a pickle's code, "
                "cannot read it)")
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"it cannot be read ({first[:200]})"
