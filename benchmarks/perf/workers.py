"""Workers sharing a run store against one worker, side by side in one run.

    python benchmarks/perf/workers.py [--cells 4] [--kimg 96] [--workers 2]

A suite of independent cells (digits 8×8, clean-only, one training seed per cell: ≥ 4 training,
sampling and evaluation stages that do not read each other) is run twice in fresh run stores:
by one `run` process with all the machine's threads, by one with a single thread, and by `run
--workers N` (N processes, each with 1/N of the threads). Target (issue 15): speed-up ≥ 1.6× with
2 workers on 2 cores, and the same results.csv. Training results depend on the thread count at
float level, so only runs with the same threads per process can be identical: the results are
compared as written (6 significant digits) and the largest difference printed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SUITE = """
suite: perf_workers
defaults:
  dataset: {{name: digits, resolution: 8}}
  mix: {{clean_fraction: 1.0}}
  method: clean_only
  network: {{model_channels: 8, channel_mult: [1], num_blocks: 1}}
  train: {{batch: 32, duration_kimg: {kimg}, checkpoint_kimg: {kimg}}}
  sample: {{num: 64, steps: 8}}
  evaluate: {{metrics: [{{name: fd_digits, epochs: 2}}]}}
grid:
  train.seed: {seeds}
"""


def timed_run(suite: Path, runs: Path, results: Path, workers: int, threads: int | None = None) -> float:
    command = [sys.executable, "-m", "ambient_bench", "run", str(suite), "--runs", str(runs),
               "--results", str(results), "--workers", str(workers)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AMBIENT_BENCH_THREADS", None)
    if threads:
        env["AMBIENT_BENCH_THREADS"] = str(threads)
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--kimg", type=float, default=96)  # startup and shared stages must not dominate
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = tmp / "suite.yaml"
        suite.write_text(SUITE.format(kimg=args.kimg, seeds=list(range(args.cells))))
        one = timed_run(suite, tmp / "one", tmp / "r1", 1)
        one_thread = timed_run(suite, tmp / "one_thread", tmp / "r1t", 1, threads=1)
        many = timed_run(suite, tmp / "many", tmp / "rn", args.workers)
        results = {name: pd.read_csv(tmp / name / "results.csv") for name in ("r1", "r1t", "rn")}
    print(f"{args.cells} independent cells of {args.kimg:g} kimg, cpu_count {os.cpu_count()}: "
          f"1 worker with all threads {one:.1f} s, 1 worker with 1 thread {one_thread:.1f} s, "
          f"{args.workers} workers (1/{args.workers} of the threads each) {many:.1f} s")
    for label, seconds, name in (("against 1 worker with all threads", one, "r1"),
                                 ("against 1 worker with 1 thread", one_thread, "r1t")):
        a, b = results[name], results["rn"]
        same = a.equals(b)
        diff = (a["value"] - b["value"]).abs().max()
        ratio = seconds / many
        print(f"speed-up {label}: {ratio:.2f}× (target ≥ 1.6×: {'met' if ratio >= 1.6 else 'NOT met'}); results.csv "
              + ("identical" if same else f"differs (largest |Δ value| {diff:.3g}: float sums depend on the "
                                         f"thread count)"))


if __name__ == "__main__":
    main()
