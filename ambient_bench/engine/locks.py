"""Stage locks that work across processes and hosts sharing a run store, with fenced ownership.

A lock is a small JSON file (host, pid, start time, token, generation) created with O_EXCL, so
exactly one worker gets it, on a local disk or a shared filesystem. While a stage runs, a thread
renews the heartbeat: it touches the file (its mtime), never rewrites it, so a holder that was
presumed dead cannot overwrite its successor's lock. Ages are read on the store's own clock (the
mtime of a file just touched there), so hosts with skewed clocks agree on them. A lock whose holder
is gone (same host and its pid no longer exists) or whose heartbeat is older than the timeout (a
holder on another host that died, or a frozen one) is taken over: it is renamed away (only one
worker's rename can succeed; a rename that caught a fresh lock puts it back) and a new one is
created with a new token and the next generation. The stage then resumes from its checkpoint.

The token is the fence: the holder compares it with the lock file (``check``) before every
checkpoint, output and done marker it writes, and one whose lock was taken stops with ``LockLost``
without touching the stage; its ``release`` never removes another holder's lock.
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

from ambient_bench.errors import UserError
from ambient_bench.fencing import LockLost

# seconds an unreadable lock file counts as being written (its creator opens it, then writes its record);
# older, it was left by a writer that died in between
UNREADABLE_GRACE = 10.0
CLOCK_REFRESH = 30.0  # seconds a measured offset to the store's clock is reused
FENCE_REUSE = 0.5  # seconds a confirmed ownership answers check() without reading the lock again (PNG exports)
_offsets: dict[int, tuple[float, float]] = {}  # st_dev → (store clock − local clock, when measured)


def lock_timeout() -> float:
    """Seconds without a heartbeat after which a lock is stale: $AMBIENT_BENCH_LOCK_TIMEOUT, default 300."""
    raw = os.environ.get("AMBIENT_BENCH_LOCK_TIMEOUT", "300")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise UserError(f"AMBIENT_BENCH_LOCK_TIMEOUT={raw!r}: expected a number of seconds above 0 (default 300)")
    return seconds


def store_clock(folder: Path) -> float:
    """Now, on the clock that stamps file times in ``folder`` (a shared filesystem's server: another host's
    clock may be off by minutes); measured by touching a probe file, reused for CLOCK_REFRESH seconds."""
    try:
        dev = os.stat(folder).st_dev
    except OSError:
        return time.time()
    offset, measured = _offsets.get(dev, (0.0, -CLOCK_REFRESH))
    if time.monotonic() - measured >= CLOCK_REFRESH:
        probe = Path(folder) / f".clock-{uuid.uuid4().hex}.tmp"
        try:
            before = time.time()
            probe.touch()
            offset = probe.stat().st_mtime - before
            probe.unlink(missing_ok=True)
        except OSError:
            return time.time() + offset
        _offsets[dev] = (offset, time.monotonic())
    return time.time() + offset


def _clocks() -> tuple[float, float]:
    """Wall clock and time since boot (suspends included, where the system has that clock)."""
    boot = getattr(time, "CLOCK_BOOTTIME", None)
    return time.time(), time.clock_gettime(boot) if boot is not None else time.monotonic()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe(holder: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_number(holder.get("started"))))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {since}"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _pid(holder: dict[str, Any]) -> int:
    try:
        return int(holder.get("pid", -1))
    except (TypeError, ValueError):
        return -1


class StageLock:
    def __init__(self, path: Path, timeout: float | None = None) -> None:
        self.path = Path(path)
        self.timeout = lock_timeout() if timeout is None else timeout
        self.token = uuid.uuid4().hex
        self.generation = 1
        self.started = time.time()
        self._lost = False
        self._confirmed = (-float("inf"), -float("inf"))  # _clocks() when ownership was last read from the file
        self._touched = -float("inf")  # time.time() of the last heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started": self.started,
                "token": self.token, "generation": self.generation}

    def holder(self, path: Path | None = None) -> dict[str, Any] | None:
        """Who holds the lock ({} when the file is unreadable, e.g. half-written or an old empty one)."""
        try:
            record = json.loads((path or self.path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _age(self) -> float:
        """Seconds since the lock file was last touched, on the store's clock (inf when it is gone)."""
        try:
            return store_clock(self.path.parent) - self.path.stat().st_mtime
        except FileNotFoundError:
            return float("inf")

    def stale(self, holder: dict[str, Any]) -> bool:
        if not holder:  # unreadable: being written by a holder that just created it, or left by a dead one
            return self._age() > UNREADABLE_GRACE
        if holder.get("host") == socket.gethostname() and not _alive(_pid(holder)):
            return True
        return self._age() > self.timeout

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self._record(), f)
        return True

    def _put_back(self, aside: Path) -> None:
        """Return a lock renamed away by mistake, unless a new one was created meanwhile."""
        try:
            os.link(aside, self.path)  # fails when the path exists: never replaces a lock
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not self.path.exists():
                os.rename(aside, self.path)
        aside.unlink(missing_ok=True)

    @staticmethod
    def _require_file(path: Path) -> None:
        """A lock is a small file; a folder in its place (made by hand, or a bad copy) is never taken over."""
        if path.is_dir():
            raise UserError(f"{path} is a folder, not a stage lock; remove it (`rm -r {path}`) and run again")

    def acquire(self) -> bool:
        """True when this process now holds the lock (taking over a stale one); False when a live
        holder has it (see ``holder()``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._create():
            self._require_file(self.path)
            holder = self.holder()
            if holder is None or not self.stale(holder):
                return self._create() if holder is None else False
            aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
            try:
                os.rename(self.path, aside)  # of several workers taking over, one rename wins
            except FileNotFoundError:
                return False
            if aside.is_dir() and not aside.is_symlink():  # made a folder between our look and our rename
                if not self.path.exists():
                    os.rename(aside, self.path)
                self._require_file(aside if aside.exists() else self.path)
            if (self.holder(aside) or {}).get("token") != holder.get("token"):
                self._put_back(aside)  # another worker took it over between our look and our rename
                return False
            aside.unlink(missing_ok=True)
            self.generation = int(_number(holder.get("generation"))) + 1
            if not self._create():
                return False
        self._touched = time.time()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat {self.path}")
        self._thread.start()
        return True

    def owned(self) -> bool:
        """Whether the lock file still carries this lock's token (one read of a small file)."""
        if not self._lost:
            holder = self.holder()
            self._lost = not holder or holder.get("token") != self.token
        return not self._lost

    def _recently_confirmed(self) -> bool:
        """Ownership read less than FENCE_REUSE s ago by both clocks, with a heartbeat under half the timeout
        old: a take-over needs a whole timeout of silence, which a freeze since would show on the clocks."""
        now = _clocks()
        window = min(FENCE_REUSE, self.timeout / 20)
        return (not self._lost and all(0 <= t - c < window for t, c in zip(now, self._confirmed))
                and time.time() - self._touched < self.timeout / 2)

    def check(self, fresh: bool = False) -> None:
        """The fence: raise ``LockLost`` (naming the new holder) when another worker has taken the lock.
        ``fresh``: always read the lock file (before a commit); otherwise a confirmation of the last moment
        is reused (``_recently_confirmed``)."""
        if not fresh and self._recently_confirmed():
            return
        now = _clocks()
        if self.owned():
            self._confirmed = now
        else:
            holder = self.holder()
            who = f"now held by {describe(holder)}" if holder else "released by the worker that took it over"
            raise LockLost(f"lost the lock of {self.path.parent} ({who}): this process was presumed dead (no "
                           f"heartbeat for {self.timeout:g} s, e.g. it was suspended); it stops without touching "
                           f"the stage")

    def _beat(self) -> None:
        while not self._stop.wait(max(self.timeout / 4, 0.05)):
            if not self.owned():
                return  # taken over (we were presumed dead): the new holder's lock is left alone
            try:
                os.utime(self.path)  # touching, never rewriting: at worst it renews a successor's lock
            except FileNotFoundError:
                self._lost = True
                return
            self._touched = time.time()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.owned():
            return  # a holder presumed dead never removes its successor's lock
        aside = self.path.with_name(f"{self.path.name}.released-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if (self.holder(aside) or {}).get("token") == self.token:
            aside.unlink(missing_ok=True)
        else:  # taken over between our look and our rename: put the successor's lock back
            self._put_back(aside)
