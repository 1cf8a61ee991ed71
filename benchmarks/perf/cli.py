"""Start-up cost of the command line, side by side in one run (issue 28).

    python benchmarks/perf/cli.py [--repeats 5]

Each command runs as a fresh child process, ``--repeats`` times in rotation (so a busy machine
slows every command alike); the figure is the median CPU time (user + system) of the child,
read with ``os.wait4``. Targets: ``--help`` under 0.5 s of CPU (its ratio to a bare
``import ambient_bench`` is printed too); ``plan benchmarks/smoke_cpu.yaml`` at most 2× the bare
import of the layers ``plan`` needs (suite loading, stage graph, run store, compute estimate), with
the per-user FLOP cache warm as after a first plan (``engine/flops.py``; the cold figure, an empty
cache every time, is printed beside it). A command that imports torch is flagged: ``--help`` and
``--version`` must not.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("ambient_bench.config.suite", "ambient_bench.engine.runner", "ambient_bench.engine.store",
          "ambient_bench.engine.compute")
TORCH_PROBE = "import sys, runpy; sys.argv = {argv!r}; " \
              "import atexit; atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr)); " \
              "runpy.run_module('ambient_bench', run_name='__main__')"


def cpu_seconds(argv: list[str], env: dict[str, str], root: Path) -> float | None:
    """User + system CPU seconds of one child process running ``argv`` in ``root``; None where the command
    does not exist there (an older checkout without ``--version``)."""
    with tempfile.TemporaryFile() as sink:
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=sink, stderr=sink)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sink.seek(0)
        if proc.returncode == 2 and b"usage:" in sink.read():
            return None
        if proc.returncode not in (0, 141):
            sink.seek(0)
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{sink.read().decode()[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def imports_torch(args: list[str], env: dict[str, str], root: Path) -> bool:
    out = subprocess.run([sys.executable, "-c", TORCH_PROBE.format(argv=["ambient_bench", *args])], cwd=root,
                         env=env, capture_output=True, text=True)
    return out.stderr.strip().splitlines()[-1] == "True"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout to measure (default this one; e.g. an older commit's, for before/after)")
    args = parser.parse_args()
    root = args.root.resolve()
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    py = [sys.executable]
    runs = tempfile.mkdtemp(prefix="perf_cli_runs_")  # an empty run store: plan reads every stage's state
    commands = {
        "import ambient_bench": py + ["-c", "import ambient_bench"],
        "import plan's layers": py + ["-c", "import " + ", ".join(LAYERS)],
        "--help": py + ["-m", "ambient_bench", "--help"],
        "--version": py + ["-m", "ambient_bench", "--version"],
        "list": py + ["-m", "ambient_bench", "list"],
        "plan smoke_cpu": py + ["-m", "ambient_bench", "plan", "benchmarks/smoke_cpu.yaml", "--runs", runs],
        "plan smoke_cpu, cold": py + ["-m", "ambient_bench", "plan", "benchmarks/smoke_cpu.yaml", "--runs", runs],
    }
    cold = {"plan smoke_cpu, cold"}  # a fresh per-user cache each time: FLOPs counted (engine/flops.py)
    env["AMBIENT_BENCH_CACHE"] = tempfile.mkdtemp(prefix="perf_cli_cache_")  # warm after the first run
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, argv in commands.items():
            fresh = {**env, "AMBIENT_BENCH_CACHE": tempfile.mkdtemp(prefix="perf_cli_cold_")}
            seconds = cpu_seconds(argv, fresh if name in cold else env, root)
            if seconds is not None:
                times[name].append(seconds)
    times = {name: values for name, values in times.items() if values}
    commands = {name: argv for name, argv in commands.items() if name in times}
    median = {name: statistics.median(values) for name, values in times.items()}
    torch = {name: imports_torch(argv[3:], env, root) for name, argv in commands.items() if argv[1] == "-m"}
    print(f"median CPU seconds (user + sys) of {args.repeats} runs each, {sys.executable}, code in {root}")
    for name, value in median.items():
        spread = f"{min(times[name]):.2f}–{max(times[name]):.2f}"
        flag = "" if name not in torch else ("  imports torch" if torch[name] else "  no torch")
        print(f"  {name:<24}{value:7.2f} s  ({spread}){flag}")
    help_ok = median["--help"] < 0.5 and not torch["--help"]
    plan_ratio = median["plan smoke_cpu"] / median["import plan's layers"]
    print(f"target --help < 0.5 s CPU, no torch: {median['--help']:.2f} s "
          f"({median['--help'] / median['import ambient_bench']:.2f}× `import ambient_bench`): "
          + ("met" if help_ok else "NOT MET"))
    layers = median["import plan's layers"]
    cold_note = "" if "plan smoke_cpu, cold" not in median else \
        f" (with an empty FLOP cache, the first plan on a machine: {median['plan smoke_cpu, cold'] / layers:.2f}×)"
    print(f"target plan smoke_cpu ≤ 2× its layers' import: {plan_ratio:.2f}×: "
          + ("met" if plan_ratio <= 2 else "NOT MET") + cold_note)
    return 0 if help_ok and plan_ratio <= 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
