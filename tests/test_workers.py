"""Workers sharing one run store: each stage runs exactly once, a killed worker's stage is taken
over and resumed, and the results equal a sequential run's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, run_cli, numbers_of

pytestmark = pytest.mark.slow

SUITE = """
suite: workers
defaults:
  dataset: {{name: digits, resolution: 8}}
  mix: {{clean_fraction: 0.5, corruption: {{name: gaussian_blur, sigma: 0.6}}}}
  method: clean_only
  network: {{model_channels: 8, channel_mult: [1], num_blocks: 1}}
  train: {{batch: 32, duration_kimg: {kimg}, checkpoint_kimg: {ckpt}}}
  sample: {{num: 32, steps: 4}}
  evaluate: {{metrics: [{{name: fd_digits, epochs: 1}}]}}
grid:
  method: [clean_only, all_data]
  train.seed: [0, 1]
"""


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ambient_bench", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_two_runs_at_once_share_the_work(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(kimg=0.2, ckpt=0.1))
    runs = tmp_path / "runs"
    a = _start("run", str(suite), "--runs", str(runs), "--results", str(tmp_path / "a"))
    b = _start("run", str(suite), "--runs", str(runs), "--results", str(tmp_path / "b"))
    out_a, out_b = a.communicate(timeout=900)[0], b.communicate(timeout=900)[0]
    assert a.returncode == 0 and b.returncode == 0, out_a[-2000:] + out_b[-2000:]
    starts = {d: (d / "attempts.log").read_text().split().count("start") for d in runs.glob("*/*")
              if (d / "DONE").exists()}
    assert len(starts) == 17 and set(starts.values()) == {1}  # every stage exactly once, by one of them
    sequential = run_cli("run", str(suite), "--runs", str(tmp_path / "seq"), "--results", str(tmp_path / "s"))
    assert sequential.returncode == 0, sequential.stderr
    reference = numbers_of(tmp_path / "s" / "results.csv")
    assert numbers_of(tmp_path / "a" / "results.csv") == reference == numbers_of(tmp_path / "b" / "results.csv")
    status = run_cli("status", str(suite), "--runs", str(runs))
    assert status.returncode == 0 and "totals: 17 done" in status.stdout


def test_workers_flag_and_a_killed_worker_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv("AMBIENT_BENCH_THREADS", "1")  # every process alike: float results depend on threads
    suite = tmp_path / "suite.yaml"
    # one cell: the heir's two workers both wait on the victim's training, so killing it must hand it over
    suite.write_text(SUITE.format(kimg=48, ckpt=0.8).split("grid:")[0])
    runs = tmp_path / "runs"
    victim = _start("run", str(suite), "--runs", str(runs), "--results", str(tmp_path / "v"))
    deadline = time.time() + 600
    checkpoint = None
    while time.time() < deadline and checkpoint is None:  # wait for its first training checkpoint
        time.sleep(0.5)
        checkpoint = next(iter(runs.glob("train/*/checkpoint.pt")), None)
    assert checkpoint is not None, "no checkpoint appeared"
    heir = _start("run", str(suite), "--runs", str(runs), "--results", str(tmp_path / "h"), "--workers", "2")
    time.sleep(3)
    status = run_cli("status", str(suite), "--runs", str(runs))
    assert status.returncode == 1 and f"pid {victim.pid}" in status.stdout  # running, where and since when
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.stdout.close()
    assert not (checkpoint.parent / "DONE").exists(), "the victim finished training before it was killed"
    out = heir.communicate(timeout=900)[0]
    assert heir.returncode == 0, out[-3000:]
    assert "— resuming" in out and "[w0]" in out and "[w1]" in out
    train_dir = checkpoint.parent
    assert (train_dir / "attempts.log").read_text().split().count("start") == 2  # the victim's and the heir's
    straight = run_cli("run", str(suite), "--runs", str(tmp_path / "straight"), "--results", str(tmp_path / "s"))
    assert straight.returncode == 0, straight.stderr
    other = tmp_path / "straight" / "train" / train_dir.name / "network.pt"
    a, b = torch.load(train_dir / "network.pt")["ema"], torch.load(other)["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)
