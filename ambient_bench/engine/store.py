"""The run store: one directory per stage key, with a status file and a done marker that vouches
for every output.

Layout::

    runs/<stage kind>/<first 16 hex digits of the key>/
        stage.json     the key, what it hashes ("reads") and the full resolved configuration
        status.json    running / failed / interrupted / done, pid, host, threads, times, error
        summary.json   the stage's result summary (written before DONE)
        DONE           written last, atomically: the key and the size and sha256 of every output
        ...            the stage's own outputs (checkpoints, tensors, images, metrics)

A done stage whose files no longer match its marker (a file cut short, emptied, removed or
edited after completion) is *corrupt*: sizes are compared whenever the state is asked for,
hashes by ``verify`` (``plan --verify``, and before a run reads a stage's outputs). A corrupt
stage is recomputed from scratch, never served.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from ambient_bench import fileio
from ambient_bench.engine.provenance import provenance
from ambient_bench.engine.locks import StageLock, describe
from ambient_bench.errors import UserError

DONE, STATUS, SUMMARY, STAGE, LOCK = "DONE", "status.json", "summary.json", "stage.json", ".lock"
LOGFILE = "log.txt"  # the stage's own log (logging module), every attempt appended
STAGE_LOG = logging.getLogger("ambient_bench.stage")
ATTEMPTS = "attempts.log"  # one line per start and end of the stage's work: which worker ran it, when
JOB = "slurm.json"  # the job that runs the stage under --launcher (engine/launch.py)
# bookkeeping that changes after completion (status, attempts, job), the lock, or the marker itself
_NOT_OUTPUTS = {DONE, STATUS, LOCK, ATTEMPTS, JOB, LOGFILE}


class StageBusy(UserError):
    """Another live process holds the stage's lock."""


def _outputs(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.relative_to(d).as_posix() not in _NOT_OUTPUTS
                  and not p.name.endswith(fileio.TEMP_SUFFIX))


def _stage_log(d: Path) -> logging.Handler:
    """Send the stage logger to ``d/log.txt`` while the stage runs (the console keeps its progress bars)."""
    handler = logging.FileHandler(d / LOGFILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    STAGE_LOG.setLevel(logging.INFO)
    STAGE_LOG.propagate = False  # the console has its own lines
    STAGE_LOG.addHandler(handler)
    STAGE_LOG.info(f"{d.parent.name} {d.name[:16]} start (pid {os.getpid()} on {socket.gethostname()})")
    return handler


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._verified: set[Path] = set()  # stage folders whose hashes matched in this process

    def dir(self, kind: str, key: str) -> Path:
        d = self.root / kind / key[:16]
        if not d.is_dir():  # missing, or something replaced it (checked here, as the paths below would fail)
            for path in (d, d.parent, self.root):
                if os.path.lexists(path) and not path.is_dir():
                    what = "a link to nothing" if path.is_symlink() and not path.exists() else "a file"
                    raise UserError(f"{path} is {what}, not a folder of the run store; move it away or delete "
                                    f"it (`rm {path}`) and re-run: what it held is recomputed")
        return d

    def _marker(self, d: Path, key: str) -> dict[str, Any] | None:
        """The done marker's record; None when there is none; {"problem": ...} when it is damaged."""
        try:
            text = (d / DONE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            return {"problem": f"its done marker {d / DONE} cannot be read ({err})"}
        if text == key + "\n":  # written before markers listed their files: nothing to compare
            return {"files": {}}
        try:
            record = json.loads(text)
        except ValueError:
            return {"problem": f"its done marker {d / DONE} is damaged"}
        if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("files"), dict):
            return {"problem": f"its done marker {d / DONE} is damaged or belongs to another stage"}
        return record

    def problem(self, kind: str, key: str, full: bool = False) -> str | None:
        """Why a done stage cannot be trusted (naming the file), or None. ``full`` also compares hashes."""
        d = self.dir(kind, key)
        record = self._marker(d, key)
        if record is None:
            return None
        if "problem" in record:
            return record["problem"]
        for name, (size, digest) in record["files"].items():
            path = d / name
            if not path.is_file():
                return f"{path} is missing"
            if path.stat().st_size != size:
                return f"{path} has {path.stat().st_size} bytes, {size} when the stage finished"
            if full and d not in self._verified and fileio.sha256_file(path) != digest:
                return f"{path} changed after the stage finished (sha256 differs)"
        if full:
            self._verified.add(d)
        return None

    def state(self, kind: str, key: str) -> str:
        """'done', 'corrupt' (done, but an output no longer matches), 'partial' (started, not finished)
        or 'missing'."""
        d = self.dir(kind, key)
        if (d / DONE).exists():
            return "corrupt" if self.problem(kind, key) else "done"
        return "partial" if d.exists() else "missing"

    def verify(self, kind: str, key: str) -> str | None:
        """Hash check of a done stage (once per process): the problem, or None."""
        return self.problem(kind, key, full=True)

    def discard(self, kind: str, key: str) -> bool:
        """Remove a stage's outputs so that it runs from scratch (a corrupt stage, or one that read one),
        under its lock; False when another live worker holds it (and so is already on it)."""
        d = self.dir(kind, key)
        if d.is_symlink():  # a stage folder linked from elsewhere: the link goes; its target, outside, is left
            lock, held = StageLock(Path(os.path.realpath(d)) / LOCK), d.exists()
            if held and not lock.acquire():
                return False
            d.unlink()
            if held:
                lock.release()
            self._verified.discard(d)
            return True
        if not d.exists():
            return True
        lock = StageLock(d / LOCK)
        if not lock.acquire():
            return False
        try:
            trash = d.with_name(f".discarded-{d.name}-{os.getpid()}")
            os.replace(d, trash)  # the lock file goes with it
            shutil.rmtree(trash, ignore_errors=True)
        finally:
            lock.release()
        self._verified.discard(d)
        return True

    def summary(self, kind: str, key: str) -> dict[str, Any]:
        path = self.dir(kind, key) / SUMMARY
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UserError(f"stage {kind} {key[:16]}: {path} cannot be read ({type(err).__name__}); "
                            f"re-run the suite to recompute the stage") from None

    def _status(self, d: Path, state: str, **extra: Any) -> None:
        status = {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                  "torch_threads": torch.get_num_threads(),  # float results depend on it
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
        fileio.write_json(d / STATUS, status)

    def _seal(self, d: Path, key: str) -> None:
        files = {p.relative_to(d).as_posix(): [p.stat().st_size, fileio.sha256_file(p)] for p in _outputs(d)}
        fileio.write_json(d / DONE, {"key": key, "files": files})
        self._verified.add(d)

    def execute(self, kind: str, key: str, material: dict[str, Any], resolved: dict[str, Any],
                work: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Run ``work(stage_dir)`` under a lock; mark done only if it returns.

        ``material`` (what the key hashes) and ``resolved`` (the full configuration the stage
        ran with, non-semantic knobs included) are stored in ``stage.json``.
        """
        d = self.dir(kind, key)
        d.mkdir(parents=True, exist_ok=True)
        lock = StageLock(d / LOCK)
        if not lock.acquire():
            holder = lock.holder() or {}
            raise StageBusy(f"stage {kind} {key[:16]} is being run by {describe(holder)} ({d}); "
                            f"wait for it to finish or stop it")
        try:
            if self.state(kind, key) == "done":  # finished by another process while we waited
                return self.summary(kind, key)
            fileio.remove_orphan_temps(d)  # left by a killed writer; we hold the lock
            fileio.write_json(d / STAGE, {"kind": kind, "key": key, "reads": material, "resolved": resolved})
            started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self._status(d, "running", started=started)
            clock = time.perf_counter()
            handler = _stage_log(d)
            self._attempt(d, "start")
            try:
                summary = work(d)
            except KeyboardInterrupt:
                self._status(d, "interrupted", started=started)
                self._attempt(d, "interrupted")
                raise
            except BaseException as err:
                line = str(err).strip().splitlines()[0] if str(err).strip() else ""
                STAGE_LOG.info(f"{kind} {key[:16]} failed: {type(err).__name__}: {line}")
                self._status(d, "failed", started=started, error=f"{type(err).__name__}: {err}", line=line,
                             failed_at=time.time(), traceback=traceback.format_exc())
                self._attempt(d, "failed")
                raise
            fileio.write_json(d / SUMMARY, summary)
            self._seal(d, key)
            self._status(d, "done", started=started, wall_seconds=round(time.perf_counter() - clock, 3),
                         provenance=provenance())
            self._attempt(d, "done")
            STAGE_LOG.info(f"{kind} {key[:16]} done in {time.perf_counter() - clock:.1f} s")
            return summary
        finally:
            if "handler" in locals():
                STAGE_LOG.removeHandler(handler)
                handler.close()
            lock.release()

    @staticmethod
    def _attempt(d: Path, event: str) -> None:
        with open(d / ATTEMPTS, "a", encoding="utf-8") as f:  # appends of one short line do not interleave
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {event} {socket.gethostname()} {os.getpid()}\n")

    def status(self, kind: str, key: str) -> dict[str, Any]:
        """The stage's status.json ({} when there is none or it cannot be read)."""
        try:
            status = json.loads((self.dir(kind, key) / STATUS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    def holder(self, kind: str, key: str) -> dict[str, Any] | None:
        """Who holds the stage's lock now, if a live process does."""
        lock = StageLock(self.dir(kind, key) / LOCK)
        holder = lock.holder()
        return None if holder is None or lock.stale(holder) else holder
