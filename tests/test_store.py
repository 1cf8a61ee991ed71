"""Run store: a stage is done only when its work returned; failures and locks are visible."""
from __future__ import annotations

import fcntl
import json

import pytest

from ambient_bench import UserError
from ambient_bench.engine.store import RunStore

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


def test_a_stage_held_by_another_process_is_refused(tmp_path):
    store = RunStore(tmp_path)
    d = store.dir("train", KEY)
    d.mkdir(parents=True)
    with open(d / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="being run by another process"):
            store.execute("train", KEY, {}, {}, lambda out: {})
