"""Stage locks: a lock file its creator is still writing is held, one left empty by a dead writer is not."""
from __future__ import annotations

import os
import time

from ambient_bench.engine.locks import UNREADABLE_GRACE, StageLock


def test_an_unreadable_lock_is_held_while_fresh_and_taken_over_once_old(tmp_path):
    path = tmp_path / ".lock"
    path.write_text("")  # created (O_EXCL) but not yet written: another worker between open and write
    assert not StageLock(path).acquire()  # two runs once both took it here and ran the stage twice
    old = time.time() - UNREADABLE_GRACE - 1
    os.utime(path, (old, old))  # the writer died before writing its record
    lock = StageLock(path)
    assert lock.acquire()
    lock.release()
