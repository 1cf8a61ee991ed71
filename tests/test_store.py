"""Run store: a stage is done only when its work returned; failures and locks are visible."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from ambient_bench.engine.locks import lock_timeout
from ambient_bench.engine.store import RunStore, StageBusy

KEY = "ab" * 32


def test_done_marker_only_after_success(tmp_path):
    store = RunStore(tmp_path)
    assert store.state("train", KEY) == "missing"
    summary = store.execute("train", KEY, {"x": 1}, {"x": 1, "device": "cpu"}, lambda out: {"ok": True})
    assert summary == {"ok": True} and store.state("train", KEY) == "done"
    stage = json.loads((store.dir("train", KEY) / "stage.json").read_text())
    assert stage["key"] == KEY and stage["reads"] == {"x": 1} and stage["resolved"]["device"] == "cpu"
    # a finished stage is not run again even if asked
    assert store.execute("train", KEY, {}, {}, lambda out: pytest.fail("ran twice")) == {"ok": True}


def test_failure_is_recorded_and_partial(tmp_path):
    store = RunStore(tmp_path)

    def crash(out):
        (out / "half.pt").write_text("partial output")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        store.execute("sample", KEY, {}, {}, crash)
    status = json.loads((store.dir("sample", KEY) / "status.json").read_text())
    assert status["state"] == "failed" and "out of memory" in status["error"]
    assert store.state("sample", KEY) == "partial" and not (store.dir("sample", KEY) / "DONE").exists()


def _hold(d, **holder):
    d.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": os.getppid(), "started": time.time(), "heartbeat": time.time(),
              "token": "someone-else", **holder}
    (d / ".lock").write_text(json.dumps(record))
    os.utime(d / ".lock", (record["heartbeat"], record["heartbeat"]))  # the heartbeat is the file's mtime


def test_a_stage_held_by_a_live_process_is_refused(tmp_path):
    store = RunStore(tmp_path)
    _hold(store.dir("train", KEY))  # our parent process: alive, fresh heartbeat
    with pytest.raises(StageBusy, match=f"being run by pid {os.getppid()} on {socket.gethostname()}"):
        store.execute("train", KEY, {}, {}, lambda out: {})
    _hold(store.dir("train", KEY), host="node-elsewhere", pid=1)  # another host, fresh heartbeat
    with pytest.raises(StageBusy):
        store.execute("train", KEY, {}, {}, lambda out: {})
    assert store.holder("train", KEY)["host"] == "node-elsewhere"


def test_a_dead_or_silent_holder_is_taken_over(tmp_path):
    store = RunStore(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    _hold(store.dir("train", KEY), pid=dead.pid)  # same host, pid gone
    assert store.execute("train", KEY, {}, {}, lambda out: {"ok": 1}) == {"ok": 1}
    _hold(store.dir("sample", KEY), host="node-elsewhere", heartbeat=time.time() - 10 * lock_timeout())
    assert store.execute("sample", KEY, {}, {}, lambda out: {"ok": 2}) == {"ok": 2}
    attempts = (store.dir("sample", KEY) / "attempts.log").read_text().split("\n")
    assert [line.split()[1] for line in attempts if line] == ["start", "done"]
    assert not (store.dir("sample", KEY) / ".lock").exists()  # released


def test_the_heartbeat_keeps_a_long_stage_alive(tmp_path, monkeypatch):
    monkeypatch.setenv("AMBIENT_BENCH_LOCK_TIMEOUT", "0.4")
    store = RunStore(tmp_path)

    def slow(out):
        time.sleep(1.2)  # three timeouts: without heartbeats the lock would look stale
        holder = store.holder("train", KEY)
        assert holder is not None and holder["pid"] == os.getpid()
        with pytest.raises(StageBusy):  # a second worker (here: another lock object) cannot take it
            store.execute("train", KEY, {}, {}, lambda out: {})
        return {"ok": True}

    assert store.execute("train", KEY, {}, {}, slow) == {"ok": True}
