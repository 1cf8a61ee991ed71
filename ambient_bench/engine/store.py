"""The run store: one directory per stage key, with a status file and a done marker that vouches
for every output.

Layout::

    runs/<stage kind>/<first 16 hex digits of the key>/
        stage.json     the key, what it hashes ("reads") and the full resolved configuration
        status.json    running / failed / interrupted / done, pid, host, threads, times, error
        summary.json   the stage's result summary (written before DONE)
        DONE           written last, atomically: the key and the size and sha256 of every output
        ...            the stage's own outputs (checkpoints, tensors, images, metrics)

A done stage whose marker cannot vouch for its files (unreadable, another stage's, a malformed
entry, or the bare key of the pre-hash format) or whose files no longer match it (a file cut
short, emptied, removed, edited or added after completion) is *corrupt*: sizes are compared
whenever the state is asked for, hashes and unlisted files by ``verify`` (``plan --verify``, and
every ``run`` for every stage of its suite: engine/runner.py ``find_corrupt``). A corrupt stage is
recomputed from scratch, never served.
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

from ambient_bench import fencing, fileio, records
from ambient_bench.engine.provenance import provenance
from ambient_bench.engine.locks import StageLock, describe, store_clock
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
                  and not p.name.endswith(fileio.TEMP_SUFFIX) and not p.name.startswith(LOCK))  # a lock set aside


def _output_name(name: object) -> bool:
    """A done marker's file name: relative, inside the stage folder, not bookkeeping."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        return False
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts) and name not in _NOT_OUTPUTS


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
        """The done marker's record; None when there is none; {"problem": ...} when it cannot vouch for the
        stage: unreadable, not this stage's, a malformed entry, or the bare key of the pre-hash format
        (which records no file, so a swapped output would pass: the stage is recomputed, not trusted)."""
        try:
            text = (d / DONE).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):  # no marker (or no stage folder): not done, as ``state`` says
            return None
        except (OSError, UnicodeDecodeError) as err:
            return {"problem": f"its done marker {d / DONE} cannot be read ({type(err).__name__})"}
        if text.strip() == key:
            return {"problem": f"its done marker {d / DONE} holds only the key (the format before markers "
                               f"recorded their files), so nothing vouches for the outputs"}
        try:
            record = json.loads(text)
        except ValueError:
            return {"problem": f"its done marker {d / DONE} is damaged"}
        if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("files"), dict):
            return {"problem": f"its done marker {d / DONE} is damaged or belongs to another stage"}
        for name, entry in record["files"].items():
            if not (_output_name(name) and records.well_formed(entry)):
                return {"problem": f"its done marker {d / DONE} has a malformed entry ({str(name)[:60]!r}: "
                                   f"{str(entry)[:60]})"}
        return record

    def problem(self, kind: str, key: str, full: bool = False) -> str | None:
        """Why a done stage cannot be trusted (naming the file), or None. Sizes are always compared; ``full``
        (``plan --verify`` and every ``run``) also compares hashes and looks for outputs the marker does
        not list (a file dropped into the folder later would be read by a glob)."""
        d = self.dir(kind, key)
        record = self._marker(d, key)
        if record is None:
            return None
        if "problem" in record:
            return record["problem"]
        hashes = full and d not in self._verified
        for name, entry in record["files"].items():
            found = records.problem(d / name, entry, "when the stage finished", hashes=hashes)
            if found:
                return found
        if hashes:
            extra = [p for p in _outputs(d) if p.relative_to(d).as_posix() not in record["files"]]
            if extra:
                return f"{extra[0]} is not among the files its done marker lists (added after the stage finished)"
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
        fencing.check(fresh=True)  # hashing took a while: read the lock again; write_json checks once more
        fileio.write_json(d / DONE, {"key": key, "files": files})
        self._verified.add(d)

    def execute(self, kind: str, key: str, material: dict[str, Any], resolved: dict[str, Any],
                work: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Run ``work(stage_dir)`` under a lock; mark done only if it returns.

        ``material`` (what the key hashes) and ``resolved`` (the full configuration the stage
        ran with, non-semantic knobs included) are stored in ``stage.json``.

        The lock fences the work (``fencing``): every file written inside ``work``, the summary and the
        done marker first check that this process still holds the lock; when another worker has taken it
        over (this one was frozen past the timeout) ``LockLost`` is raised and nothing more is written
        here, not even the status: the stage is the other worker's.
        """
        d = self.dir(kind, key)
        d.mkdir(parents=True, exist_ok=True)
        lock = StageLock(d / LOCK)
        if not lock.acquire():
            holder = lock.holder() or {}
            raise StageBusy(f"stage {kind} {key[:16]} is being run by {describe(holder)} ({d}); "
                            f"wait for it to finish or stop it")
        try:
            with fencing.fenced(lock.check):
                return self._run(d, kind, key, material, resolved, work, lock)
        finally:
            lock.release()

    def _run(self, d: Path, kind: str, key: str, material: dict[str, Any], resolved: dict[str, Any],
             work: Callable[[Path], dict[str, Any]], lock: StageLock) -> dict[str, Any]:
        if self.state(kind, key) == "done":  # finished by another process while we waited
            return self.summary(kind, key)
        fileio.remove_orphan_temps(d)  # left by a killed writer; we hold the lock
        fileio.write_json(d / STAGE, {"kind": kind, "key": key, "reads": material, "resolved": resolved})
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._status(d, "running", started=started)
        clock = time.perf_counter()
        handler = _stage_log(d)
        try:
            self._attempt(d, "start", lock)
            try:
                summary = work(d)
            except KeyboardInterrupt:
                if lock.owned():
                    self._status(d, "interrupted", started=started)
                    self._attempt(d, "interrupted", lock)
                raise
            except BaseException as err:
                lock.check(fresh=True)  # a holder presumed dead records nothing (its failure may be the take-over)
                line = fileio.error_line(err)
                STAGE_LOG.info(f"{kind} {key[:16]} failed: {type(err).__name__}: {line}")
                self._status(d, "failed", started=started, error=f"{type(err).__name__}: {err}", line=line,
                             failed_at=time.time(), traceback=traceback.format_exc())
                self._attempt(d, "failed", lock)
                raise
            fileio.write_json(d / SUMMARY, summary)
            self._seal(d, key)  # the commit: DONE renamed into place last, right after the fence is checked
            self._status(d, "done", started=started, wall_seconds=round(time.perf_counter() - clock, 3),
                         provenance=provenance())
            self._attempt(d, "done", lock)
            STAGE_LOG.info(f"{kind} {key[:16]} done in {time.perf_counter() - clock:.1f} s")
            return summary
        finally:
            STAGE_LOG.removeHandler(handler)
            handler.close()

    @staticmethod
    def _attempt(d: Path, event: str, lock: StageLock) -> None:
        lock.check()
        with open(d / ATTEMPTS, "a", encoding="utf-8") as f:  # appends of one short line do not interleave
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {event} {socket.gethostname()} {os.getpid()} "
                    f"generation {lock.generation}\n")

    def status(self, kind: str, key: str) -> dict[str, Any]:
        """The stage's status.json ({} when there is none or it cannot be read)."""
        try:
            status = json.loads((self.dir(kind, key) / STATUS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    def status_time(self, kind: str, key: str) -> float | None:
        """When status.json was last written, on the store's clock (its mtime); None when there is none."""
        try:
            return (self.dir(kind, key) / STATUS).stat().st_mtime
        except OSError:
            return None

    def clock(self) -> float:
        """Now on the store's clock (the one stamping its files' mtimes; another host's may be skewed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return store_clock(self.root)

    def holder(self, kind: str, key: str) -> dict[str, Any] | None:
        """Who holds the stage's lock now, if a live process does."""
        lock = StageLock(self.dir(kind, key) / LOCK)
        holder = lock.holder()
        return None if holder is None or lock.stale(holder) else holder
