"""``python -m ambient_bench compare --good G --bad B [--ood O]``: does my bad data help?

Writes a suite for the user's folders beside its results (``<results>/suite.yaml``: edit it and re-run it with
``run``), checks and summarises its plan, and hands the suite to ``run``, which trains clean-only, all-data and
Ambient-o (plus filter + fine-tune with out-of-distribution data) over ``--seeds`` training seeds and prints the
default table (methods × the metric) with a verdict per method from the paired statistics over seeds.

Defaults are small on purpose (a first answer in about a minute on a CPU): a small network, a short training
(``--duration-kimg``), few samples. Ambient-o uses a fixed σ_min for every bad image, as
``benchmarks/user_folders_example.yaml`` does: a noise classifier needs more images than a small folder has.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Callable

from ambient_bench.config.profiles import PROFILES
from ambient_bench.errors import UserError

FALLBACK_METRIC = "fd_bandpass"
CAVEAT = ("metric fd_bandpass: a Fréchet distance on offline band-pass features (no weights), not FID and not "
          "FD_DINOv2; fine for telling methods apart on the same data, not for comparing with published numbers. "
          "With the DINOv2 checkpoint at {path}, compare uses fd_dinov2 (or choose with --metric).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--good", required=True, help="folder of images you trust")
    p.add_argument("--bad", required=True, action="append", help="folder of low-quality images (repeatable)")
    p.add_argument("--ood", action="append", default=[], help="folder of out-of-distribution images (repeatable)")
    p.add_argument("--metric", help="metric name (default: fd_dinov2 when its weights are present, else fd_bandpass)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per method (default 3; the verdicts pair them)")
    p.add_argument("--duration-kimg", type=float, default=0.128,
                   help="training length per model in thousands of images (default 0.128: a first look)")
    p.add_argument("--resolution", type=int, default=16, help="image size in pixels (default 16: a first look)")
    p.add_argument("--samples", type=int, default=64, help="samples per model the metric scores (default 64)")
    p.add_argument("--sigma-min", type=float, default=2.0, help="Ambient-o's σ_min for every bad image (default 2.0)")
    p.add_argument("--name", help="suite name (default compare_<good folder name>)")
    p.add_argument("--runs", default="runs", help="run store directory (default: runs)")
    p.add_argument("--results", help="results directory; the suite is written there (default results/<name>)")
    p.add_argument("--profile", default="full", choices=PROFILES)


def default_metric() -> tuple[str, str | None]:
    """(metric, caveat): fd_dinov2 when its checkpoint is already on disk (looked up, never downloaded)."""
    from ambient_bench.metrics.fd_dinov2 import PAPER_ARCH, weights_path

    path = weights_path(None, PAPER_ARCH)
    if path.is_file():
        return "fd_dinov2", None
    return FALLBACK_METRIC, CAVEAT.format(path=path)


def _folder(text: str, flag: str) -> Path:
    from ambient_bench.datasets._paths import require_images, user_path

    folder = user_path(text)
    require_images(folder, flag, "a folder of images", f"fix {flag}:")
    return folder


def _count(folder: Path) -> int:
    from ambient_bench.datasets._paths import list_images

    return len(list_images(folder))


def suite_text(name: str, good: Path, bad: list[Path], ood: list[Path], metric: str, seeds: int,
               duration_kimg: float, resolution: int, sigma_min: float, samples: int, results: Path) -> str:
    counts = f"good {_count(good):,}, bad {sum(map(_count, bad)):,}" + (
        f", out-of-distribution {sum(map(_count, ood)):,}" if ood else "")
    methods = ["clean_only", "all_data", "{name: ambient_o, sigma_min: %g%s}" % (
        sigma_min, ", ood_sigma_max: 0.2" if ood else "")]
    if ood:
        methods.append("{name: filter_finetune, finetune_kimg: %g}" % max(duration_kimg / 4, 0.032))
    quote = lambda p: '"' + str(p).replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
    return f"""# Written by `python -m ambient_bench compare`; edit it and re-run it with
#   python -m ambient_bench run {results / 'suite.yaml'}
# Ambient-o trusts every bad image above a fixed sigma_min (the classifier annotation of
# benchmarks/user_folders_example.yaml's README section needs more images); raise
# train.duration_kimg and sample.num for numbers worth more than a first look.
suite: {name}
description: "your folders ({counts} images), {seeds} seeds per method, metric {metric}"
results_dir: {quote(results)}

defaults:
  dataset:
    name: user_folders
    high_quality: {quote(good)}
    low_quality: [{', '.join(map(quote, bad))}]
    out_of_distribution: [{', '.join(map(quote, ood))}]
    resolution: {resolution}
    channels: 3
  mix: {{clean_fraction: 1.0}}       # the folders say which images are good
  method: clean_only
  network: {{model_channels: 8, channel_mult: [1, 2], num_blocks: 1}}
  train: {{batch: 32, duration_kimg: {duration_kimg:g}, checkpoint_kimg: {duration_kimg:g}, lr: 2.0e-3,
          ema_halflife_kimg: {min(0.5, duration_kimg / 4):g}}}
  sample: {{num: {samples}, steps: 6, batch: {samples}}}
  evaluate:
    metrics: [{metric}]

grid:
  train.seed: [{', '.join(str(s) for s in range(seeds))}]
  method: [{', '.join(methods)}]
"""


def prepare(args: argparse.Namespace, say: Callable[[str], None]) -> list[str]:
    """Write the suite, check it and print its plan summary; returns the argv of the `run` that answers."""
    from ambient_bench.config.suite import load_suite
    from ambient_bench.engine.runner import build_graph, check_data
    from ambient_bench.engine.store import RunStore
    from ambient_bench.engine.work import reference_count
    from ambient_bench.results.default_table import check_specs

    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: needs at least 1 (2 or more for a verdict)")
    if args.duration_kimg <= 0:
        raise UserError(f"--duration-kimg {args.duration_kimg:g}: needs a positive training length")
    good = _folder(args.good, "--good")
    bad = [_folder(b, "--bad") for b in args.bad]
    ood = [_folder(o, "--ood") for o in args.ood]
    metric, caveat = (args.metric, None) if args.metric else default_metric()
    name = args.name or "compare_" + (re.sub(r"[^A-Za-z0-9_]+", "_", good.name).strip("_") or "folders")
    results = Path(args.results or f"results/{name}").absolute()
    path = results / "suite.yaml"
    text = suite_text(name, good, bad, ood, metric, args.seeds, args.duration_kimg, args.resolution,
                      args.sigma_min, args.samples, results)
    from ambient_bench import fileio  # torch: only once the command runs (--help stays light)

    fileio.write_text(path, text)
    suite = load_suite(path, profile=args.profile)  # a problem (a bad --metric) is said before any training
    check_specs(suite)
    check_data(suite)
    graph = build_graph(suite)
    runs = Path(args.runs) if args.profile == "full" else Path(args.runs) / args.profile
    store = RunStore(runs)
    done = sum(store.state(s.kind, s.key) == "done" for s in graph.stages)
    say(f"wrote {path} (edit it and re-run it with `python -m ambient_bench run {path}`)")
    say(f"{suite.description}; {len(suite.cells)} models, {len(graph.stages)} stages ({done} done); {metric} "
        f"scores each model's {suite.cells[0].config['sample']['num']} samples against the "
        f"{reference_count(suite.cells[0].config['dataset']):,} good images")
    if caveat:
        say(caveat)
    if args.seeds < 2:
        say("note: with one seed per method no verdict is possible; --seeds 3 or more gives one")
    return ["run", str(path), "--runs", str(args.runs), "--profile", args.profile, "--results", str(results)]
