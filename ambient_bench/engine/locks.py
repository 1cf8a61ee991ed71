"""Stage locks that work across processes and hosts sharing a run store.

A lock is a small JSON file (host, pid, start time, heartbeat, token) created with O_EXCL, so
exactly one worker gets it, on a local disk or a shared filesystem. While a stage runs, a
thread renews the heartbeat. A lock whose holder is gone (same host and its pid no longer
exists) or whose heartbeat is older than the timeout (a holder on another host that died, or a
frozen one) is taken over: it is renamed away (only one worker's rename can succeed) and a new
one is created. The stage then resumes from its checkpoint, like any interrupted stage.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

# seconds an unreadable lock file counts as being written (its creator opens it, then writes its record);
# older, it was left by a writer that died in between
UNREADABLE_GRACE = 10.0


def lock_timeout() -> float:
    """Seconds without a heartbeat after which a lock is stale: $AMBIENT_BENCH_LOCK_TIMEOUT, default 300."""
    return float(os.environ.get("AMBIENT_BENCH_LOCK_TIMEOUT", "300"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe(holder: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {since}"


class StageLock:
    def __init__(self, path: Path, timeout: float | None = None) -> None:
        self.path = Path(path)
        self.timeout = lock_timeout() if timeout is None else timeout
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started": self.started,
                "heartbeat": time.time(), "token": self.token}

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock ({} when the file is unreadable, e.g. half-written or an old empty one)."""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def stale(self, holder: dict[str, Any]) -> bool:
        if not holder:  # unreadable: being written by a holder that just created it, or left by a dead one
            try:
                return time.time() - self.path.stat().st_mtime > UNREADABLE_GRACE
            except FileNotFoundError:
                return True
        if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1))):
            return True
        return time.time() - float(holder.get("heartbeat", 0)) > self.timeout

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self._record(), f)
        return True

    def acquire(self) -> bool:
        """True when this process now holds the lock (taking over a stale one); False when a live
        holder has it (see ``holder()``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._create():
            holder = self.holder()
            if holder is None or not self.stale(holder):
                return self._create() if holder is None else False
            aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
            try:
                os.rename(self.path, aside)  # of several workers taking over, one rename wins
            except FileNotFoundError:
                return False
            aside.unlink(missing_ok=True)
            if not self._create():
                return False
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(max(self.timeout / 4, 0.05)):
            holder = self.holder()
            if not holder or holder.get("token") != self.token:
                return  # taken over (we were presumed dead): the new holder's lock is left alone
            tmp = self.path.with_name(f".{self.path.name}.{self.token}.tmp")
            tmp.write_text(json.dumps(self._record()), encoding="utf-8")
            os.replace(tmp, self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self.holder()
        if holder and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)
