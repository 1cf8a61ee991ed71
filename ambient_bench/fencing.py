"""The fence of the stage this process is working on: a check that it still owns the stage's lock.

The run store (engine/store.py) installs one while a stage's work runs; every atomic file write
(fileio.atomic_write) and every training checkpoint and log line calls ``check()`` just before it
lands, so a holder whose lock was taken over while it was frozen (SIGSTOP, a swapped-out VM, a
paused container) stops with ``LockLost`` instead of writing into a stage another worker owns or has
finished. A neutral module: lower layers (training/, fileio) call it without importing the engine.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from ambient_bench.errors import UserError


class LockLost(UserError):
    """This process's stage lock was taken over (it was presumed dead): it must not touch the stage."""


_check: Callable[[bool], None] | None = None


def check(fresh: bool = False) -> None:
    """Raise ``LockLost`` when the stage this process works on is no longer its own; no-op outside a stage.
    ``fresh``: read the lock now (before a commit), not a confirmation of the last half second."""
    if _check is not None:
        _check(fresh)


@contextlib.contextmanager
def fenced(check_owner: Callable[[bool], None]) -> Iterator[None]:
    """``check()`` calls ``check_owner(fresh)`` inside this block (one stage at a time per process)."""
    global _check
    previous, _check = _check, check_owner
    try:
        yield
    finally:
        _check = previous
