"""Fenced stage ownership: a holder frozen past the lock timeout (SIGSTOP) whose training stage another
worker took over and finished never writes into that stage again; both runs end with complete results
equal to an undisturbed run's. Also: a stale holder's heartbeat and release leave its successor's lock
alone, and status timestamps from skewed or broken clocks never block a retry."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from ambient_bench.engine.locks import StageLock
from ambient_bench.engine.runner import Graph, _failed_since, failures_since
from ambient_bench.engine.store import RunStore
from ambient_bench.fencing import LockLost

REPO = Path(__file__).resolve().parents[2]
KEY = "cd" * 32
SUITE = """
suite: fencing
defaults:
  dataset: {name: digits, resolution: 8}
  mix: {clean_fraction: 0.5, corruption: {name: gaussian_blur, sigma: 0.6}}
  method: clean_only
  network: {model_channels: 8, channel_mult: [1], num_blocks: 1}
  train: {batch: 32, duration_kimg: 1.6, checkpoint_kimg: 0.16}
  sample: {num: 32, steps: 4}
  evaluate: {metrics: [{name: fd_digits, epochs: 1}]}
"""
# `python -m ambient_bench` as seen from another host: pid liveness cannot tell a frozen holder from a dead one
AS_HOST = ("import os, runpy, socket, sys; socket.gethostname = lambda: os.environ['FAKE_HOST']; "
           "sys.argv[0] = 'ambient_bench'; runpy.run_module('ambient_bench', run_name='__main__', alter_sys=True)")


def _start(args: list[str], host: str | None, env: dict[str, str]) -> subprocess.Popen:
    head = [sys.executable, "-c", AS_HOST] if host else [sys.executable, "-m", "ambient_bench"]
    return subprocess.Popen([*head, *args], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **env, **({"FAKE_HOST": host} if host else {})})


def _numbers(path: Path) -> str:
    """results.csv without provenance (when, where and how long a stage ran differ run to run)."""
    from ambient_bench.results.collect import PROVENANCE

    return pd.read_csv(path).drop(columns=list(PROVENANCE), errors="ignore").to_csv(index=False)


def _wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


ENV = {"AMBIENT_BENCH_THREADS": "1", "AMBIENT_BENCH_LOCK_TIMEOUT": "2", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("undisturbed")
    (folder / "suite.yaml").write_text(SUITE)
    proc = _start(["run", str(folder / "suite.yaml"), "--runs", str(folder / "runs"), "--results", str(folder / "r")],
                  None, ENV)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    return folder / "suite.yaml", _numbers(folder / "r" / "results.csv")


@pytest.mark.slow
@pytest.mark.parametrize("hosts, resume", [((None, None), "after the other finished training"),
                                           (("node-a", "node-b"), "while the other holds the lock")])
def test_a_frozen_holder_whose_stage_was_taken_over_writes_nothing_and_both_runs_finish(tmp_path, undisturbed,
                                                                                        hosts, resume):
    suite, reference = undisturbed
    runs = tmp_path / "runs"
    procs = [_start(["run", str(suite), "--runs", str(runs), "--results", str(tmp_path / name)], host, ENV)
             for name, host in zip("ab", hosts)]
    try:
        checkpoint = _wait_for(lambda: next(iter(runs.glob("train/*/checkpoint.pt")), None), 300, "a checkpoint")
        train = checkpoint.parent
        holder_pid = _wait_for(lambda: (StageLock(train / ".lock").holder() or {}).get("pid"), 30, "the lock's holder")
        frozen = next(p for p in procs if p.pid == holder_pid)
        frozen.send_signal(signal.SIGSTOP)
        assert not (train / "DONE").exists(), "training finished before its holder was frozen"
        if resume.startswith("after"):
            _wait_for(lambda: (train / "DONE").exists(), 300, "the other worker to finish training")
        else:
            _wait_for(lambda: (train / "attempts.log").read_text().count(" start ") == 2, 60, "the take-over")
            time.sleep(0.5)  # past the other worker's first writes: the frozen one wakes into a live take-over
        frozen.send_signal(signal.SIGCONT)
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.communicate()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    frozen_out = outs[procs.index(frozen)]
    assert "lost the lock of" in frozen_out and "Traceback" not in frozen_out
    events = [line.split()[1:4] for line in (train / "attempts.log").read_text().splitlines()]
    heir = next(p for p in procs if p is not frozen)
    assert [e[0] for e in events] == ["start", "start", "done"], events  # the frozen holder wrote nothing after
    assert events[0][2] == str(frozen.pid) and events[1][2] == events[2][2] == str(heir.pid), events
    store = RunStore(runs)
    for done in runs.glob("*/*/DONE"):  # every stage's outputs still match its marker, hashes included
        assert store.verify(done.parent.parent.name, json.loads(done.read_text())["key"]) is None, done
    for name in "ab":
        assert _numbers(tmp_path / name / "results.csv") == reference


def _taken_over(path: Path) -> tuple[StageLock, StageLock]:
    old = StageLock(path, timeout=0.3)
    assert old.acquire()
    old._stop.set()  # frozen: no more heartbeats
    old._thread.join()
    past = time.time() - 5
    os.utime(path, (past, past))
    new = StageLock(path, timeout=0.3)
    assert new.acquire() and new.generation == 2
    return old, new


def test_a_stale_holder_neither_renews_nor_releases_its_successors_lock(tmp_path):
    import threading

    old, new = _taken_over(tmp_path / ".lock")
    assert not old.owned()
    with pytest.raises(LockLost, match=f"now held by pid {os.getpid()}"):
        old.check()
    new._stop.set()  # the successor's own heartbeat paused: what follows is the old holder's doing
    new._thread.join()
    record = (tmp_path / ".lock").read_text()
    old._stop.clear()  # the frozen holder wakes up: its heartbeat thread runs again
    old._thread = threading.Thread(target=old._beat)
    old._thread.start()
    old._thread.join(timeout=5)
    assert not old._thread.is_alive()  # it saw the take-over and stopped
    old.release()
    assert (tmp_path / ".lock").read_text() == record  # never rewritten, never removed
    new.check()
    new.release()
    assert not (tmp_path / ".lock").exists()


def test_a_release_or_take_over_that_catches_a_successors_lock_puts_it_back(tmp_path, monkeypatch):
    path = tmp_path / ".lock"
    old, new = _taken_over(path)
    record = path.read_text()
    monkeypatch.setattr(old, "owned", lambda: True)  # the take-over came between its look and its rename
    old.release()
    assert path.read_text() == record
    third = StageLock(path, timeout=0.3)  # judged the old holder's record stale, then renamed the new one's
    monkeypatch.setattr(third, "holder", lambda at=None: {"token": old.token} if at is None else StageLock.holder(
        third, at))
    monkeypatch.setattr(third, "stale", lambda holder: True)
    assert not third.acquire()
    assert path.read_text() == record and sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    new.release()


def test_a_holder_whose_lock_was_taken_over_stops_without_touching_the_stage(tmp_path, monkeypatch):
    from ambient_bench import fileio

    monkeypatch.setenv("AMBIENT_BENCH_LOCK_TIMEOUT", "2")  # the fence reuses a confirmation for 0.1 s at most
    store = RunStore(tmp_path)
    d = store.dir("train", KEY)

    def work(out: Path) -> dict:
        taker = StageLock(out / ".lock")  # another worker takes the stage over meanwhile
        os.replace(out / ".lock", out / "frozen-lock")
        assert taker.acquire()
        taker._stop.set()  # its heartbeat is not needed here
        time.sleep(0.2)  # a real take-over comes after a timeout of silence: a past confirmation no longer counts
        fileio.write_text(out / "checkpoint.pt", "would overwrite the new holder's checkpoint")
        pytest.fail("the write went through")

    with pytest.raises(LockLost):
        store.execute("train", KEY, {}, {}, work)
    assert not (d / "checkpoint.pt").exists() and not (d / "DONE").exists() and not (d / "summary.json").exists()
    assert json.loads((d / "status.json").read_text())["state"] == "running"  # not marked failed by the loser
    assert [line.split()[1] for line in (d / "attempts.log").read_text().splitlines()] == ["start"]
    assert (d / ".lock").exists()  # the new holder's lock stays


def _status(store: RunStore, written: float, **status) -> None:
    path = store.dir("train", KEY) / "status.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"state": "failed", "line": "boom", **status}))
    os.utime(path, (written, written))


@pytest.mark.parametrize("failed_at", [time.time() + 10 ** 7, "yesterday", None, [1], 1e308])
def test_failure_times_from_a_skewed_or_broken_clock_never_block_a_retry(tmp_path, failed_at):
    store = RunStore(tmp_path)
    began = store.clock()
    graph = Graph([SimpleNamespace(kind="train", key=KEY, deps={})], [], {})
    _status(store, began - 60, failed_at=failed_at)  # failed before this run: retried, whatever failed_at says
    assert _failed_since(store, "train", KEY, began) is None
    assert failures_since(graph, store, time.time()) == ({}, 0)
    _status(store, began + 1, failed_at=failed_at)  # failed during this run (another worker): not retried
    assert _failed_since(store, "train", KEY, began) == "boom"
    assert failures_since(graph, store, time.time() - 30) == ({f"train {KEY[:16]}": "boom"}, 0)


def test_a_cell_left_out_of_the_results_is_named(tmp_path):
    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.runner import build_graph
    from ambient_bench.results.collect import unfinished_cells

    (tmp_path / "suite.yaml").write_text(SUITE + "grid:\n  train.seed: [0, 1]\n")
    suite = load_suite(tmp_path / "suite.yaml")
    graph = build_graph(suite)
    store = RunStore(tmp_path / "runs")
    for stage in graph.stages:  # every stage done, except the training of seed 1
        if not (stage.kind == "train" and stage.runtime["train"]["seed"] == 1):
            store.dir(stage.kind, stage.key).mkdir(parents=True)
            (store.dir(stage.kind, stage.key) / "DONE").write_text(json.dumps({"key": stage.key, "files": {}}))
    train = next(s for s in graph.stages if s.kind == "train" and s.runtime["train"]["seed"] == 1)
    assert unfinished_cells(suite, graph, store) == [f"train.seed=1 (stage train {train.key[:16]} is missing)"]


def test_a_job_whose_stage_was_taken_over_returns_the_other_workers_result(tmp_path, monkeypatch):
    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.launch import run_stage
    from ambient_bench.engine.runner import build_graph

    (tmp_path / "suite.yaml").write_text(SUITE)
    mix = next(s for s in build_graph(load_suite(tmp_path / "suite.yaml")).stages if s.kind == "mix")
    execute = RunStore.execute

    def frozen_then_taken_over(self, kind, key, material, resolved, work):
        execute(self, kind, key, material, resolved, lambda out: {"by": "the other worker"})
        raise LockLost("lost the lock of the stage")

    monkeypatch.setattr(RunStore, "execute", frozen_then_taken_over)
    summary = run_stage(str(tmp_path / "suite.yaml"), [], "full", str(tmp_path / "runs"), f"mix:{mix.key[:16]}")
    assert summary == {"by": "the other worker"}


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_lock_ages_are_read_on_the_stores_clock_whatever_this_hosts_clock_says(tmp_path, monkeypatch, skew):
    from ambient_bench.engine import locks

    fresh = StageLock(tmp_path / ".lock", timeout=60)
    assert fresh.acquire()
    real = time.time
    monkeypatch.setattr(locks, "_offsets", {})
    monkeypatch.setattr(locks.time, "time", lambda: real() + skew)  # this host's clock is an hour off
    other = StageLock(tmp_path / ".lock", timeout=60)
    holder = {**other.holder(), "host": "node-elsewhere"}  # pid liveness cannot help: only the heartbeat's age
    assert not other.stale(holder)
    past = real() - 120
    os.utime(tmp_path / ".lock", (past, past))  # silent for two minutes by the store's clock
    assert other.stale(holder)
    monkeypatch.setattr(locks.time, "time", real)
    fresh.release()


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_lock_timeout_is_one_line(monkeypatch, value):
    from ambient_bench.engine.locks import lock_timeout
    from ambient_bench.errors import UserError

    monkeypatch.setenv("AMBIENT_BENCH_LOCK_TIMEOUT", value)
    with pytest.raises(UserError, match="AMBIENT_BENCH_LOCK_TIMEOUT="):
        lock_timeout()
