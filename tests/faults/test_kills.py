"""SIGKILL at a random point inside every stage kind of a tiny suite, then the same command again:
the results equal an undisturbed run's, bit for bit.

One chain of runs: each is killed while a different stage kind runs (a seeded delay after its
status.json says running), the next resumes from what the last left, the final one completes.
Every run is the CLI's ``main`` in a process forked from a server that has imported torch and the
harness once (multiprocessing's forkserver): a kill costs a fork, not a Python start-up.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

from conftest import numbers_of

SUITE = """
suite: kills
defaults:
  dataset: {name: digits, resolution: 8}
  mix: {clean_fraction: 0.5, corruption: {name: gaussian_blur, sigma: 1.0}}
  method: {name: ambient_o, annotate: quality, quality_scorer: laplacian_sharpness, sigma_min: 1.0}
  network: {model_channels: 8, channel_mult: [1], num_blocks: 1}
  train: {batch: 16, duration_kimg: 0.064, checkpoint_kimg: 0.016}
  sample: {num: 32, steps: 4, batch: 8}
  evaluate: {metrics: [{name: fd_digits, epochs: 1}]}
"""
# in the order the suite runs them; each run of the chain is killed inside the next one
KINDS = ("mix", "annotate", "train", "sample", "metric_setup", "evaluate")
# the files whose bytes are the stages' results (logs, timings and TensorBoard events differ run to run)
OUTPUTS = {"mix": "mixed.pt", "annotate": "annotations.csv", "train": "network.pt", "sample": "samples.pt",
           "metric_setup": "classifier.pt", "evaluate": "metrics.json"}
SEED = 29  # of the kill delays
# what a run of this suite imports, imported once by the fork server (a module that fails is skipped)
PRELOAD = ["torch", "ambient_bench.cli", "ambient_bench.engine.runner", "ambient_bench.engine.stages",
           "ambient_bench.training.loop", "ambient_bench.annotation.quality", "ambient_bench.metrics.fd_digits",
           "ambient_bench.results.collect", "ambient_bench.results.render", "ambient_bench.results.report",
           "matplotlib.pyplot", "pandas", "torch_fidelity", "torch.utils.tensorboard"]


def _cli(argv: list[str], log: str) -> None:
    """The child: ``python -m ambient_bench ARGV`` with its output in ``log``; exits with its code."""
    os.setpgrp()  # a group of its own: the kill takes its loader workers too
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["AMBIENT_BENCH_THREADS"] = "1"  # float results depend on the thread count
    from ambient_bench.cli import main

    sys.exit(main(argv))


def _context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _stage_dir(runs: Path, kind: str) -> Path | None:
    """The one stage folder of ``kind`` (named by its key: a temporary folder beside it is not it)."""
    found = [p for p in (runs / kind).glob("*") if p.is_dir() and p.name.isalnum()] if (runs / kind).is_dir() else []
    return found[0] if found else None


def _running(stage: Path | None, pid: int) -> bool:
    try:
        status = json.loads((stage / "status.json").read_text())
    except (TypeError, OSError, ValueError):  # no stage folder yet, no status, or caught mid-write
        return False
    return status.get("state") == "running" and status.get("pid") == pid


def _kill_during(ctx, argv: list[str], log: Path, runs: Path, kind: str, delay: float) -> bool:
    """Start a run, SIGKILL it ``delay`` s after stage ``kind`` says running; True when the stage
    was not done at that moment (the kill landed inside it)."""
    proc = ctx.Process(target=_cli, args=(argv, str(log)))
    proc.start()
    deadline = time.time() + 300
    while not _running(_stage_dir(runs, kind), proc.pid):
        assert proc.is_alive(), f"the run ended before stage {kind} ran:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"stage {kind} never ran"
        time.sleep(0.005)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGSTOP)  # frozen while we look, then killed where it stands
    landed = not (_stage_dir(runs, kind) / "DONE").exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.join()
    return landed


def _finish(ctx, argv: list[str], log: Path) -> None:
    proc = ctx.Process(target=_cli, args=(argv, str(log)))
    proc.start()
    proc.join(600)
    assert proc.exitcode == 0, log.read_text()[-4000:]


def test_a_kill_inside_every_stage_kind_then_a_rerun_gives_the_undisturbed_results(tmp_path, scenario):
    suite = tmp_path / "kills.yaml"
    suite.write_text(SUITE)
    ctx = _context()
    undisturbed, killed = tmp_path / "undisturbed", tmp_path / "killed"
    _finish(ctx, ["run", str(suite), "--runs", str(undisturbed), "--results", str(tmp_path / "r0")],
            tmp_path / "undisturbed.log")
    # wall time of each stage undisturbed: the kills land at a seeded fraction of it
    walls = {kind: json.loads((_stage_dir(undisturbed, kind) / "status.json").read_text()).get("wall_seconds") or 0.2
             for kind in KINDS}
    rng = random.Random(SEED)
    argv = ["run", str(suite), "--runs", str(killed), "--results", str(tmp_path / "r1")]
    for n, kind in enumerate(KINDS):
        with scenario(f"SIGKILL during {kind}"):
            delay = rng.uniform(0.0, 0.6) * walls[kind]
            for attempt in range(3):
                if _kill_during(ctx, argv, tmp_path / f"killed-{n}-{attempt}.log", killed, kind, delay):
                    print(f"killed {delay:.3f} s into {kind} (undisturbed: {walls[kind]:.2f} s), try {attempt + 1}")
                    break
                # it finished first (this machine was faster than the undisturbed run): run it again, killed sooner
                shutil.rmtree(_stage_dir(killed, kind))
                delay /= 4
            else:
                raise AssertionError(f"stage {kind} finished before every kill ({delay:.3f} s after it started)")
            assert not (_stage_dir(killed, kind) / "DONE").exists()
    _finish(ctx, argv, tmp_path / "final.log")
    with scenario("after the kills, the same command gives the undisturbed results"):
        assert numbers_of(tmp_path / "r1" / "results.csv") == numbers_of(tmp_path / "r0" / "results.csv")
        for kind, name in OUTPUTS.items():
            a, b = (_stage_dir(runs, kind) / name for runs in (undisturbed, killed))
            assert a.read_bytes() == b.read_bytes(), f"{kind}: {name} differs from the undisturbed run's"
            attempts = (b.parent / "attempts.log").read_text().split()
            assert attempts.count("done") == 1, (kind, attempts)  # the killed attempt never finished
