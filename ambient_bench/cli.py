"""Command line: ``python -m ambient_bench {run,plan,list,tables} ...``.

Bad input (a typo in a suite, an unknown component, a missing file) prints one line
``error: ...`` and exits with code 2 before anything is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ambient_bench.allocator import retain_freed_memory
from ambient_bench.errors import UserError

KINDS = ("corruption", "dataset", "method", "metric")


def _print(*args: object) -> None:
    print(*args, flush=True)


def _load(args: argparse.Namespace):
    from ambient_bench.config.suite import load_suite
    from ambient_bench.results.tables import load_spec

    suite = load_suite(args.suite, getattr(args, "overrides", []))
    for spec in suite.tables:
        load_spec(spec)  # a typo in a table spec fails now, not after the training
    return suite


def cmd_plan(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from ambient_bench.engine.runner import build_graph, check_data, plan_table
    from ambient_bench.engine.store import RunStore

    suite = _load(args)
    check_data(suite)
    rows = plan_table(build_graph(suite), RunStore(args.runs))
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "partial", "missing")}
    _print(f"suite {suite.name}: {len(suite.cells)} cells, {len(rows)} stages "
           f"({counts['done']} done, {counts['partial']} partial, {counts['missing']} missing); runs in {args.runs}/")
    if suite.description:
        _print(suite.description)
    _print(tabulate(rows, headers="keys", tablefmt="simple"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ambient_bench.engine.runner import build_graph, check_data, execute
    from ambient_bench.engine.store import RunStore
    from ambient_bench.results.collect import collect, export_figures, write_results
    from ambient_bench.results.render import render_all

    from ambient_bench.training import distributed

    suite = _load(args)
    check_data(suite)
    store = RunStore(args.runs)
    graph = build_graph(suite)
    distributed.init_from_env()  # under torchrun; see training/distributed.py
    if not distributed.is_main():
        execute(graph, store)
        return 0
    _print(f"suite {suite.name}: {len(suite.cells)} cells; runs in {args.runs}/")
    if args.expect_cached:
        missing = [s for s in graph.stages if store.state(s.kind, s.key) != "done"]
        if missing:
            _print(f"--expect-cached: {len(missing)} stages are not done, e.g. {missing[0].kind} "
                   f"{missing[0].key[:16]} ({missing[0].describe})")
            return 1
    report = execute(graph, store, log=_print)
    results_dir = Path(args.results or suite.results_dir)
    frame = collect(suite, graph, store)
    written = [write_results(frame, results_dir)] + render_all(frame, suite.tables, results_dir)
    figures = export_figures(suite, graph, store, results_dir)
    written += [figures] if figures else []
    _print(f"ran {report['ran']} stages, reused {report['skipped']}; wrote " + ", ".join(map(str, written)))
    for path in written:
        if path.suffix == ".md" and path != figures:
            _print("\n" + path.read_text(encoding="utf-8"))
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from ambient_bench.results.collect import read_results
    from ambient_bench.results.render import render_all

    suite = _load(args)
    results_dir = Path(args.results or suite.results_dir)
    if not (results_dir / "results.csv").is_file():
        raise UserError(f"no stored results at {results_dir}/results.csv; run "
                        f"`python -m ambient_bench run {args.suite}` first")
    paths = render_all(read_results(results_dir), suite.tables, results_dir, check=args.check)
    if args.check:
        stale = [p for p in paths if isinstance(p, Path)]
        if stale:
            _print("stale tables (re-render with `python -m ambient_bench tables "
                   f"{args.suite}`): " + ", ".join(map(str, stale)))
        for problem in (p for p in paths if not isinstance(p, Path)):
            _print(f"status drift: {problem}")
        if paths:
            return 1
        _print(f"tables of {suite.name} match {results_dir}/results.csv")
        return 0
    _print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ambient_bench.params import suggest
    from ambient_bench.registry import REGISTRIES

    kinds = KINDS
    if args.kind:
        kind = args.kind.rstrip("s") if args.kind.rstrip("s") in KINDS else args.kind
        if kind not in KINDS:
            raise UserError(f"unknown kind '{args.kind}'{suggest(args.kind, KINDS)} (kinds: {', '.join(KINDS)})")
        kinds = (kind,)
    for kind in kinds:
        registry = REGISTRIES[kind]
        _print(f"{kind}s:")
        for name in registry.names():
            cls = registry.get(name)
            _print(f"  {name}  (version {cls.version})  {cls.summary()}")
            for pname, param in cls.params.items():
                _print(f"      {pname}: {param.describe()}" + (f" — {param.help}" if param.help else ""))
            if kind == "metric":  # what a result row records: implementation and features (default params)
                for key, value in cls().protocol().items():
                    _print(f"      protocol {key}: {value}")
    return 0


def _component(kind: str, text: str) -> dict:
    from ambient_bench.config.schema import ComponentRef
    from ambient_bench.config.yamlio import parse_scalar
    from ambient_bench.params import ParamError

    try:
        return ComponentRef(kind).resolve(parse_scalar(text), ())
    except ParamError as err:
        raise UserError(f"--{kind} {text}: {err.message}") from None


def cmd_show(args: argparse.Namespace) -> int:
    from ambient_bench import fileio
    from ambient_bench.registry import DATASETS
    from ambient_bench.results.gallery import gallery_rows, render_gallery

    dataset = _component("dataset", args.dataset)
    source = DATASETS.build(dataset)
    source.check()
    corruptions = None
    if args.corruption:  # a bare name expands to its gallery settings; a mapping is one setting
        corruptions = [_component("corruption", text) for text in args.corruption]
        corruptions = [{"name": spec["name"]} if "{" not in text else spec
                       for spec, text in zip(corruptions, args.corruption)]
    picture = render_gallery(source.load(), gallery_rows(corruptions), count=args.count, cell=args.cell)
    out = Path(args.out or f"results/figures/corruptions_{dataset['name']}.png")
    fileio.atomic_write(out, lambda tmp: picture.save(tmp, format="PNG"))
    _print(f"wrote {out} ({picture.width}×{picture.height})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ambient_bench",
                                     description="Benchmark harness for diffusion models trained on bad data.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("run", "execute what is missing, skip what is done, resume what was interrupted"),
                           ("plan", "list every stage with its key and state; runs nothing")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("suite", help="suite YAML file, e.g. benchmarks/smoke_cpu.yaml")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.duration_kimg=2 train.seed=[0,1]")
        p.add_argument("--runs", default="runs", help="run store directory (default: runs)")
        if name == "run":
            p.add_argument("--results", help="results directory (default: the suite's results_dir)")
            p.add_argument("--expect-cached", action="store_true",
                           help="run nothing and exit 1 unless every stage is already done (for CI)")
    p = sub.add_parser("list", help="registered components and their parameters")
    p.add_argument("kind", nargs="?", help=f"one of {', '.join(KINDS)}")
    p = sub.add_parser("tables", help="re-render a suite's tables from its stored results")
    p.add_argument("suite")
    p.add_argument("--results", help="results directory (default: the suite's results_dir)")
    p.add_argument("--check", action="store_true", help="exit 1 if the tables on disk differ from a re-render")
    p = sub.add_parser("show", help="write a picture: a corruption gallery")
    p.add_argument("what", choices=["corruptions"])
    p.add_argument("--dataset", required=True, help="name or YAML mapping, e.g. '{name: digits, resolution: 32}'")
    p.add_argument("--corruption", action="append", help="name (all its gallery strengths) or YAML mapping; repeatable")
    p.add_argument("--count", type=int, default=8, help="images per row")
    p.add_argument("--cell", type=int, default=64, help="pixels per image in the picture")
    p.add_argument("--out", help="PNG path (default results/figures/corruptions_<dataset>.png)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come after options too (`run suite.yaml --runs x train.seed=1`).
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    retain_freed_memory()  # CPU forward passes would otherwise page-fault their activations in each time
    handler = {"run": cmd_run, "plan": cmd_plan, "list": cmd_list, "tables": cmd_tables, "show": cmd_show}[args.command]
    try:
        return handler(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; re-run the same command to resume", file=sys.stderr)
        return 130
