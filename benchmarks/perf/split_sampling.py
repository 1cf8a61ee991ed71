"""Sampling split across torchrun ranks against one rank, side by side in one run.

    python benchmarks/perf/split_sampling.py [--num 2000] [--steps 18] [--ranks 2]

A tiny digits model is trained once; its sample stage then runs under torchrun with one rank and
with ``--ranks`` gloo ranks (one thread each, so the cores are the only difference), each in a
copy of the run store. Printed: the sampling time of each (the stage's own measurement, rank 0's
wall time including the gather), the speed-up (target, issue 15: ≥ 1.6× with 2 ranks on 2 cores)
and whether the two samples.pt files are bit-identical.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = """
suite: perf_split_sampling
defaults:
  dataset: {{name: digits, resolution: 16}}
  mix: {{clean_fraction: 1.0}}
  method: clean_only
  network: {{model_channels: 16, channel_mult: [1, 2], num_blocks: 1}}
  train: {{batch: 32, duration_kimg: 0.32, checkpoint_kimg: 0.32}}
  sample: {{num: {num}, steps: {steps}, batch: 100}}
  evaluate: {{metrics: [{{name: fd_digits, epochs: 1}}]}}
"""


def run(command: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def sample_stage(runs: Path) -> tuple[float, bytes]:
    folder = next((runs / "sample").iterdir())
    return json.loads((folder / "summary.json").read_text())["seconds_sampling"], (folder / "samples.pt").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AMBIENT_BENCH_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = tmp / "suite.yaml"
        suite.write_text(SUITE.format(num=args.num, steps=args.steps))
        run([sys.executable, "-m", "ambient_bench", "run", str(suite), "--runs", str(tmp / "trained"),
             "--results", str(tmp / "r")], env)
        measured = {}
        for ranks in (1, args.ranks):
            runs = tmp / f"ranks{ranks}"
            shutil.copytree(tmp / "trained", runs)
            for kind in ("sample", "evaluate"):
                shutil.rmtree(runs / kind)
            run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                 "-m", "ambient_bench", "run", str(suite), "--runs", str(runs), "--results", str(tmp / f"r{ranks}")],
                env)
            measured[ranks] = sample_stage(runs)
    (one, a), (many, b) = measured[1], measured[args.ranks]
    ratio = one / many
    print(f"{args.num} samples, {args.steps} Heun steps, 1 thread per rank: 1 rank {one:.2f} s, "
          f"{args.ranks} ranks {many:.2f} s")
    print(f"speed-up {ratio:.2f}× (target ≥ 1.6×: {'met' if ratio >= 1.6 else 'NOT met'}); samples "
          + ("bit-identical" if a == b else "DIFFER"))


if __name__ == "__main__":
    main()
