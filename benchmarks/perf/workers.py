"""Workers sharing a run store against one worker, side by side in one run.

    python benchmarks/perf/workers.py [--cells 4] [--kimg 3.2] [--workers 2]

A suite of independent cells (digits 8×8, clean-only, one training seed per cell: ≥ 4 training,
sampling and evaluation stages that do not read each other) is run twice in fresh run stores:
by one `run` process (all the machine's threads), and by `run --workers N` (N processes, each
with 1/N of the threads). Target (issue 15): speed-up ≥ 1.6× with 2 workers on 2 cores, and the
same results.csv (training results depend on the thread count at float level, so the two
results are compared as written, to 6 significant digits, and the largest difference printed).
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


def timed_run(suite: Path, runs: Path, results: Path, workers: int) -> float:
    command = [sys.executable, "-m", "ambient_bench", "run", str(suite), "--runs", str(runs),
               "--results", str(results), "--workers", str(workers)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AMBIENT_BENCH_THREADS", None)
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--kimg", type=float, default=3.2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = tmp / "suite.yaml"
        suite.write_text(SUITE.format(kimg=args.kimg, seeds=list(range(args.cells))))
        one = timed_run(suite, tmp / "one", tmp / "r1", 1)
        many = timed_run(suite, tmp / "many", tmp / "rn", args.workers)
        a = pd.read_csv(tmp / "r1" / "results.csv")
        b = pd.read_csv(tmp / "rn" / "results.csv")
    same = a.equals(b)
    diff = (a["value"] - b["value"]).abs().max() if "value" in a else float("nan")
    ratio = one / many
    print(f"{args.cells} independent cells, cpu_count {os.cpu_count()}: 1 worker {one:.1f} s, "
          f"{args.workers} workers {many:.1f} s")
    print(f"speed-up {ratio:.2f}× (target ≥ 1.6×: {'met' if ratio >= 1.6 else 'NOT met'}); results.csv "
          + ("identical" if same else f"differs (largest |Δ value| {diff:.3g})"))


if __name__ == "__main__":
    main()
