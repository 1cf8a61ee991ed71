"""The run store: one directory per stage key, with a status file and an atomic done marker.

Layout::

    runs/<stage kind>/<first 16 hex digits of the key>/
        stage.json     the key, what it hashes ("reads") and the full resolved configuration
        status.json    running / failed / interrupted / done, pid, host, times, error
        summary.json   the stage's result summary (written before DONE)
        DONE           written last, atomically: its presence means every output is complete
        ...            the stage's own outputs (checkpoints, tensors, images, metrics)
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from ambient_bench import fileio
from ambient_bench.errors import UserError

DONE, STATUS, SUMMARY, STAGE = "DONE", "status.json", "summary.json", "stage.json"


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:16]

    def state(self, kind: str, key: str) -> str:
        """'done', 'partial' (started, not finished) or 'missing'."""
        d = self.dir(kind, key)
        if (d / DONE).is_file():
            return "done"
        return "partial" if d.exists() else "missing"

    def summary(self, kind: str, key: str) -> dict[str, Any]:
        return json.loads((self.dir(kind, key) / SUMMARY).read_text())

    def _status(self, d: Path, state: str, **extra: Any) -> None:
        status = {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
        fileio.write_json(d / STATUS, status)

    def execute(self, kind: str, key: str, material: dict[str, Any], resolved: dict[str, Any],
                work: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Run ``work(stage_dir)`` under a lock; mark done only if it returns.

        ``material`` (what the key hashes) and ``resolved`` (the full configuration the stage
        ran with, non-semantic knobs included) are stored in ``stage.json``.
        """
        d = self.dir(kind, key)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"stage {kind} {key[:16]} is being run by another process ({d}); "
                                f"wait for it to finish or stop it") from None
            if (d / DONE).is_file():  # finished by another process while we waited
                return self.summary(kind, key)
            fileio.write_json(d / STAGE, {"kind": kind, "key": key, "reads": material, "resolved": resolved})
            started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self._status(d, "running", started=started)
            try:
                summary = work(d)
            except KeyboardInterrupt:
                self._status(d, "interrupted", started=started)
                raise
            except BaseException as err:
                self._status(d, "failed", started=started, error=f"{type(err).__name__}: {err}",
                             traceback=traceback.format_exc())
                raise
            fileio.write_json(d / SUMMARY, summary)
            fileio.write_text(d / DONE, key + "\n")
            self._status(d, "done", started=started)
            return summary
