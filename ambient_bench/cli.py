"""Command line: ``python -m ambient_bench {run,plan,status,list,tables,report,show,standins,index,completion} ...``.

Bad input (a typo in a suite, an unknown component, a missing file) prints one line
``error: ...`` and exits with code 2 before anything is written; any other error prints one line too and exits 1
(``--debug`` or ``AMBIENT_BENCH_DEBUG=1``: its whole traceback). Ctrl-C exits 130 and a closed pipe
(``list | head``) 141, in one line or none, never a traceback.

Startup imports nothing heavy: each command imports what it needs (torch comes with the component
modules a suite names), so ``--help`` and ``completion`` answer at once.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ambient_bench.allocator import retain_freed_memory
from ambient_bench.config.profiles import PROFILES
from ambient_bench.errors import UserError

KINDS = ("corruption", "dataset", "method", "metric", "objective", "annotator", "view")


_PREFIX = ""  # "[w1] " in a worker of `run --workers N`, so their interleaved lines can be told apart


def _print(*args: object) -> None:
    text = " ".join(map(str, args))
    print("\n".join(_PREFIX + line for line in text.split("\n")) if _PREFIX else text, flush=True)


def _load(args: argparse.Namespace):
    from ambient_bench.config.suite import load_suite
    from ambient_bench.results.default_table import check_specs

    suite = load_suite(args.suite, getattr(args, "overrides", []), profile=getattr(args, "profile", "full"))
    check_specs(suite)  # a typo in a table spec, or a column no cell computes, fails now, not after the training
    return suite


def _runs(args: argparse.Namespace) -> Path:
    """The run store; a profile other than full gets its own namespace inside it, so that its results
    can never be served to (or mixed with) full-size runs."""
    profile = getattr(args, "profile", "full")
    return Path(args.runs) if profile == "full" else Path(args.runs) / profile


def _results(args: argparse.Namespace, suite) -> Path:
    if args.results:
        return Path(args.results)
    return suite.results_dir if suite.profile == "full" else _runs(args) / "results" / suite.name


def _require_writable(path: Path, what: str) -> None:
    """A folder we are about to write into (or create) really can be, on a normal filesystem: checked before any
    work (engine/writable.py)."""
    from ambient_bench.engine.writable import require_writable

    require_writable(path, what)


def _check_sizes(suite, graph, here_only: bool) -> None:
    """An empty training pool, or a pool / network / batch that cannot fit the machine: one line, exit 2."""
    from ambient_bench.engine.memory import check_memory, empty_pools

    empty_pools(suite, graph)
    check_memory(suite, graph, here_only=here_only)


def cmd_plan(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from ambient_bench.engine.compute import estimate
    from ambient_bench.engine.runner import build_graph, check_data, check_requirements, find_corrupt, \
        plan_table, standin_datasets
    from ambient_bench.engine.store import RunStore

    suite = _load(args)
    check_data(suite)
    runs = _runs(args)
    _require_writable(runs, "--runs")  # what `run` would refuse, plan refuses too
    graph = build_graph(suite)
    _check_sizes(suite, graph, here_only=False)
    store = RunStore(runs)
    corrupt = find_corrupt(graph, store, full=args.verify)
    rows = plan_table(graph, store)
    for row, stage in zip(rows, graph.stages):
        if (stage.kind, stage.key) in corrupt:
            row["state"] = "corrupt"
    args.gpu = args.gpu.lower()
    work, summary = estimate(graph.stages, args.gpu, suite.resources)
    for row, (amount, est) in zip(rows, work):
        row["work"] = amount.text
        row[f"{args.gpu}-h"] = "–" if est.hours == 0 else ("unknown" if est.hours is None else f"{est.hours:,.1f}")
        row["source"] = est.source
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "partial", "missing", "corrupt")}
    _print(f"suite {suite.name}: {len(suite.cells)} cells, {len(rows)} stages "
           f"({counts['done']} done, {counts['partial']} partial, {counts['missing']} missing"
           + (f", {counts['corrupt']} corrupt" if counts["corrupt"] else "") + f"); runs in {runs}/"
           + (f"; profile {suite.profile}" if suite.profile != "full" else ""))
    if suite.description:
        _print(suite.description)
    for line in summary:  # the totals first, then the stages they add up
        _print(line)
    _print(tabulate(rows, headers="keys", tablefmt="simple"))
    for (kind, key), problem in corrupt.items():
        _print(f"corrupt: stage {kind} {key[:16]}: {problem}; `run` recomputes it and what reads it")
    standins = standin_datasets(suite)
    if standins:
        _print(f"note: stand-in data (synthetic images in the real file formats) for {', '.join(standins)}; "
               + ("`run` refuses it at the full profile (use --profile tiny)" if suite.profile == "full" else
                  "results are labelled as such"))
    for note in check_requirements(suite, fetch=False):  # plan never downloads: a missing weights file is a note
        _print(note)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ambient_bench.engine.runner import build_graph, check_data, check_requirements, standin_datasets
    from ambient_bench.engine.store import RunStore

    from ambient_bench import distributed

    suite = _load(args)
    check_data(suite)
    # weights are fetched here, before anything trains; a dry run writes scripts only and never needs them
    args.weights_notes = check_requirements(suite, fetch=not (args.launcher != "none" and args.dry_run))
    standins = standin_datasets(suite)
    if standins and suite.profile == "full":
        raise UserError(f"{', '.join(standins)}: the data folder holds stand-in data (synthetic, written by "
                        f"`python -m ambient_bench standins`); a full-profile run refuses it: add --profile tiny, "
                        f"or point AMBIENT_BENCH_DATA (or the dataset's root) at the real data")
    _require_writable(_runs(args), "--runs")
    _require_writable(_results(args, suite), "--results" if args.results else "results folder")
    store = RunStore(_runs(args))
    graph = build_graph(suite)
    _check_sizes(suite, graph, here_only=args.launcher == "none")  # plan's checks, before any work
    distributed.init_from_env()  # under torchrun; see ambient_bench/distributed.py
    try:
        return _run_joined(args, suite, graph, store)
    finally:
        distributed.shutdown()  # every rank leaves the process group, returning or raising


def _run_joined(args: argparse.Namespace, suite, graph, store) -> int:
    """``run`` from the process group on (one process, or each rank under torchrun)."""
    from ambient_bench import distributed
    from ambient_bench.engine.runner import execute
    from ambient_bench.results.collect import collect, export_figures, read_results, unfinished_cells, write_results
    from ambient_bench.results.render import render_all
    from ambient_bench.results.report import write_report

    if not distributed.is_main():
        execute(graph, store)
        return 0
    _print(f"suite {suite.name}: {len(suite.cells)} cells; runs in {store.root}/"
           + (f"; profile {suite.profile}" if suite.profile != "full" else ""))
    if args.expect_cached:
        missing = [s for s in graph.stages if store.state(s.kind, s.key) != "done"]
        if missing:
            _print(f"--expect-cached: {len(missing)} stages are not done, e.g. {missing[0].kind} "
                   f"{missing[0].key[:16]} ({missing[0].describe})")
            return 1
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: needs at least 1 worker")
    if args.launcher != "none":
        return _launch(args, suite, graph, store)
    if args.worker:  # one of --workers N: execute only; the parent writes the results
        report = execute(graph, store, log=_print, keep_going=not args.fail_fast)
        return 1 if report["failed"] else 0
    if args.workers > 1:
        report = _run_workers(args, graph, store)
    else:
        progress = _suite_progress(suite, graph, store)
        try:
            report = execute(graph, store, log=progress.wrap(_print), keep_going=not args.fail_fast,
                             on_stage=progress.event)
        finally:
            progress.clear()
    results_dir = _results(args, suite)
    frame = collect(suite, graph, store)
    written = []
    if len(frame) or not report["failed"]:  # when every cell failed there is nothing to write
        written = [write_results(frame, results_dir)]
        # tables from the CSV just written, as `tables` renders them: its rounding and dtypes, so
        # `tables --check` right after a run finds nothing stale
        written += render_all(read_results(results_dir), suite.tables, results_dir)
        figures = export_figures(suite, graph, store, results_dir)
        written += [figures] if figures else []
        written.append(write_report(suite, graph, store, results_dir, read_results(results_dir)))
    _print(f"ran {report['ran']} stages, reused {report['skipped']}"
           + ("; wrote " + ", ".join(map(str, written)) if written else ""))
    for path in written:
        if path.suffix == ".md" and path.name != "figures.md":
            _print("\n" + path.read_text(encoding="utf-8"))
    if report["failed"]:
        unstarted = sum(store.state(s.kind, s.key) != "done" for s in graph.stages) - len(report["failed"]) \
            - report["blocked"]
        _print(f"{len(report['failed'])} stages failed ({report['blocked']} more not run because they read one"
               + (f", {unstarted} not started after it: --fail-fast" if args.fail_fast and unstarted > 0 else "")
               + "); their cells are missing from the results; fix and re-run the same command to resume:")
        for stage, line in report["failed"].items():
            _print(f"  {stage}: {line}")
        return 1
    missing = unfinished_cells(suite, graph, store)
    if missing:  # e.g. a stage taken over by another worker that has not finished it, or corrupted meanwhile
        _print(f"error: {len(missing)} cells are missing from the results because a stage they need is not done: "
               f"{'; '.join(missing)}; re-run the same command to finish them")
        return 1
    return 0


def _suite_progress(suite, graph, store):
    """The suite-level progress line of ``run``, weighted by ``plan``'s per-stage estimates."""
    from ambient_bench.engine.compute import estimate
    from ambient_bench.progress import SuiteProgress

    work, _ = estimate(graph.stages, "v100", suite.resources)  # only the ratios between stages matter
    idents = [(s.kind, s.key) for s in graph.stages]
    done = {(s.kind, s.key) for s in graph.stages if store.state(s.kind, s.key) == "done"}
    return SuiteProgress(idents, [est.hours for _, est in work], done)


def _launch(args: argparse.Namespace, suite, graph, store) -> int:
    """``run --launcher slurm|local``: SLURM job arrays, or one submitit job per stage here (engine/launch.py)."""
    from ambient_bench.engine.launch import submit, submit_slurm

    if args.dry_run and args.launcher != "slurm":
        raise UserError("--dry-run writes sbatch scripts: use it with --launcher slurm")
    if not args.dry_run:  # as `run` does here: what `plan --verify` flags is recomputed, never served to a job
        from ambient_bench.engine.runner import recompute_corrupt

        recompute_corrupt(graph, store, _print)
    if args.launcher == "slurm":
        submit_slurm(graph, store, suite.resources, args.suite, args.overrides, args.profile, args.cluster,
                     args.dry_run, _print)
        for note in getattr(args, "weights_notes", []):
            _print(note)
        if not args.dry_run:
            import shlex

            same = shlex.join([args.suite, *args.overrides, *(["--runs", args.runs] if args.runs != "runs" else []),
                               *(["--profile", args.profile] if args.profile != "full" else [])])
            _print(f"follow them with `python -m ambient_bench status {same}`, then `python -m ambient_bench run "
                   f"{same}` writes the results (every stage done: nothing re-runs)")
        return 0
    jobs = submit(graph, store, suite.resources, args.suite, args.overrides, args.profile, args.launcher, _print)
    failures = 0
    for job in jobs:  # the local executor: wait here, then write the results as a run would
        try:
            job.result()
        except Exception:  # noqa: BLE001 — the stage's status.json and the job's log say why
            failures += 1
    _print(f"{len(jobs)} local jobs finished, {failures} failed")
    args.launcher = "none"
    return cmd_run(args)


def _run_workers(args: argparse.Namespace, graph, store) -> dict:
    """``run --workers N``: N worker processes on the same run store (each with 1/N of the CPU threads,
    or one GPU each when CUDA_VISIBLE_DEVICES lists several); the report of what they did together."""
    import os
    import subprocess
    import time

    from ambient_bench.engine.runner import failures_since

    began = time.time()
    before = {(s.kind, s.key) for s in graph.stages if store.state(s.kind, s.key) == "done"}
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    command = [sys.executable, "-m", "ambient_bench", "run", args.suite, *args.overrides, "--runs", args.runs,
               "--profile", args.profile, "--worker", *(["--fail-fast"] if args.fail_fast else [])]
    procs = []
    for i in range(args.workers):
        env = {**os.environ, "AMBIENT_BENCH_THREADS": str(threads), "AMBIENT_BENCH_WORKER": str(i),
               **({"AMBIENT_BENCH_DEBUG": "1"} if _DEBUG else {})}
        if len(gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        procs.append(subprocess.Popen(command, env=env))
    _print(f"started {args.workers} workers ({threads} CPU threads each"
           + (f", one GPU each of {','.join(gpus)}" if len(gpus) > 1 else "") + ")")
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.wait()
        raise
    failed, blocked = failures_since(graph, store, began)
    now = {(s.kind, s.key) for s in graph.stages if store.state(s.kind, s.key) == "done"}
    return {"ran": len(now - before), "skipped": len(before), "failed": failed, "blocked": blocked}


def _progress(stage, store) -> str:
    """How far a running stage is, where it says (training: kimg of its stats.jsonl)."""
    import json

    stats = store.dir(stage.kind, stage.key) / "stats.jsonl"
    if stage.kind != "train" or not stats.is_file():
        return ""
    lines = stats.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    try:
        kimg = json.loads(lines[-1])["kimg"] if lines else 0.0
    except (ValueError, KeyError, TypeError):
        return ""
    return f", {kimg:g} of {stage.runtime['train']['duration_kimg']:g} kimg"


def cmd_stage(args: argparse.Namespace) -> int:
    from ambient_bench.engine.launch import run_stage

    run_stage(args.suite, args.overrides, args.profile, args.runs, args.stage)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    from tabulate import tabulate

    from ambient_bench.engine.locks import describe
    from ambient_bench.engine.runner import build_graph
    from ambient_bench.engine.slurm import describe_job, job_record, queue
    from ambient_bench.engine.store import RunStore

    suite = _load(args)
    store = RunStore(_runs(args))
    rows, counts, graph = [], {}, build_graph(suite)
    records = {(s.kind, s.key): job_record(store, s) for s in graph.stages if store.state(s.kind, s.key) != "done"}
    jobs = queue([r["job_id"] for r in records.values() if r])  # SLURM's view of them, asked once
    for stage in graph.stages:
        state, status, holder = store.state(stage.kind, stage.key), {}, None
        detail = ""
        if state != "done":
            status = store.status(stage.kind, stage.key)
            holder = store.holder(stage.kind, stage.key)
        if state == "done":
            detail = ""
        elif holder is not None:
            state, detail = "running", describe(holder) + _progress(stage, store)
        elif records.get((stage.kind, stage.key)):  # submitted to SLURM: queued, blocked or ended unfinished
            state, detail = describe_job(records[(stage.kind, stage.key)], status, jobs)
        elif status.get("state") == "failed":
            state = "failed"
            detail = (status.get("line") or status.get("error", ""))[:160]
            job = store.dir(stage.kind, stage.key) / "slurm.json"
            log = json.loads(job.read_text()).get("log") if job.is_file() else None
            detail += f" (job log {log})" if log else f" ({store.dir(stage.kind, stage.key) / 'status.json'})"
        elif state == "partial":
            since = status.get("updated", "?")
            detail = f"stopped ({status.get('state', 'unknown')}) at {since}; `run` resumes it"
        counts[state] = counts.get(state, 0) + 1
        rows.append({"stage": stage.kind, "key": stage.key[:16], "state": state, "what": stage.describe,
                     "detail": detail})
    _print(f"suite {suite.name}: {len(rows)} stages; runs in {store.root}/ ({time.strftime('%H:%M:%S')})")
    _print(tabulate(rows, headers="keys", tablefmt="simple"))
    _print("totals: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return 0 if counts.get("done", 0) == len(rows) else 1


def _stored_results(args: argparse.Namespace, suite: Any) -> Path:
    """The suite's results folder, which must hold a results.csv from a run."""
    results_dir = _results(args, suite)
    if not (results_dir / "results.csv").is_file():
        raise UserError(f"no stored results at {results_dir}/results.csv; run "
                        f"`python -m ambient_bench run {args.suite}` first")
    return results_dir


def cmd_tables(args: argparse.Namespace) -> int:
    from ambient_bench.engine.runner import build_graph
    from ambient_bench.engine.store import RunStore
    from ambient_bench.results.collect import cells_without_rows, done_cells, read_results
    from ambient_bench.results.render import render_all
    from ambient_bench.results.report import write_report

    suite = _load(args)
    results_dir = _stored_results(args, suite)
    if not args.check:
        _require_writable(results_dir, "--results" if args.results else "results folder")
    frame = read_results(results_dir, args.suite)
    missing = cells_without_rows(suite, frame)
    if missing:  # a cell that failed (or never ran) has no row; one the run store has done lost its rows
        print(f"warning: {results_dir}/results.csv has no row for cell {', '.join(missing)} of {suite.name} (shown "
              f"as –)", file=sys.stderr, flush=True)
        done = done_cells(suite, build_graph(suite), RunStore(_runs(args)))
        missing = [cell for cell in missing if cell in done]
    paths = render_all(frame, suite.tables, results_dir, check=args.check)
    if args.check:
        if missing:
            _print(f"{results_dir}/results.csv has no row for cell {', '.join(missing)} of {suite.name}, done in "
                   f"{_runs(args)}; write it again with `python -m ambient_bench run {args.suite}`")
        stale = [p for p in paths if isinstance(p, Path)]
        if stale:
            _print("stale tables (re-render with `python -m ambient_bench tables "
                   f"{args.suite}`): " + ", ".join(map(str, stale)))
        for problem in (p for p in paths if not isinstance(p, Path)):
            _print(f"status drift: {problem}")
        if paths or missing:
            return 1
        _print(f"tables of {suite.name} match {results_dir}/results.csv")
        return 0
    graph, store = build_graph(suite), RunStore(_runs(args))
    # the report page shows the tables too; its samples and training curves come from the run store, so
    # without them (results committed, runs elsewhere) a rewrite would drop them: the page is kept then
    missing = [s for s in graph.stages if s.kind in ("sample", "train") and store.state(s.kind, s.key) != "done"]
    if missing:
        _print("wrote " + ", ".join(map(str, paths)))
        _print(f"kept {results_dir / 'index.html'}: {len(missing)} sampling/training stages of this suite are not "
               f"in {store.root}/ (their samples and curves would be lost); with the run store, `python -m "
               f"ambient_bench report {args.suite} --runs DIR` rewrites it")
        return 0
    page = write_report(suite, graph, store, results_dir, read_results(results_dir, args.suite))
    _print("wrote " + ", ".join(map(str, [*paths, page])))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ambient_bench.engine.runner import build_graph
    from ambient_bench.engine.store import RunStore
    from ambient_bench.results.collect import read_results
    from ambient_bench.results.report import write_report

    suite = _load(args)
    results_dir = _stored_results(args, suite)
    _require_writable(results_dir, "--results" if args.results else "results folder")
    page = write_report(suite, build_graph(suite), RunStore(_runs(args)), results_dir,
                        read_results(results_dir, args.suite))
    _print(f"wrote {page} (open it in a browser; images in {page.parent / 'report'}/)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ambient_bench.params import suggest
    from ambient_bench.registry import REGISTRIES

    if args.suite:  # the components a suite's plugins register, beside the built-in and installed ones
        from ambient_bench.config import yamlio
        from ambient_bench.registry import import_plugin

        path = Path(args.suite)
        if not path.is_file():
            raise UserError(f"suite file '{path}' not found; give the path of a suite YAML")
        raw, _ = yamlio.load(path)
        plugins = raw.get("plugins") or [] if isinstance(raw, dict) else []
        if not isinstance(plugins, list):
            raise UserError(f"{path}: plugins must be a list of modules or .py files, got {plugins!r}")
        for plugin in plugins:
            import_plugin(str(plugin), path.parent)
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
            _print(f"  {name}  (version {cls.version})  {cls.summary()}"
                   + (f"  [{cls.provenance}]" if cls.provenance else ""))
            for slot_name, slot in getattr(cls, "slots", {}).items():  # a method's recipe
                choices = [n for n in REGISTRIES[slot.kind].names()
                           if slot.role is None or REGISTRIES[slot.kind].get(n).role == slot.role]
                _print(f"      {slot_name}: {slot.kind}, default {slot.default} (of {', '.join(choices)}) — "
                       f"{slot.help}")
            if kind == "annotator":
                _print(f"      annotates: {'out-of-distribution' if cls.role == 'ood' else 'low-quality'} samples")
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


def cmd_standins(args: argparse.Namespace) -> int:
    from ambient_bench.datasets.standins import write_standins

    folder = Path(args.folder)
    counts = write_standins(folder, per_class=args.per_class)
    _print(f"wrote stand-in data to {folder}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    _print(f"use it with: AMBIENT_BENCH_DATA={folder} python -m ambient_bench run <suite> --profile tiny")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ambient_bench.compare import prepare

    return cmd_run(build_parser().parse_args(prepare(args, _print)))


def cmd_index(args: argparse.Namespace) -> int:
    from ambient_bench.results.index import write_index

    path, stale = write_index(Path(args.results), check=args.check)
    if args.check:
        if stale:
            _print(f"{path} is stale; regenerate it with `python -m ambient_bench index`")
            return 1
        _print(f"{path} is up to date")
        return 0
    _print(f"wrote {path}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from ambient_bench.weights_cli import run

    return run(args, _print)


# shtab's completion of a file / folder argument (its FILE / DIRECTORY), without importing shtab at startup
FILE = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
FOLDER = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/", "tcsh": "d"}
SHELLS = ("bash", "zsh", "tcsh")


class _Commands(argparse._SubParsersAction):
    """The subcommands, shown without the hidden ones (a command added without ``help=``, as ``stage``,
    the body of a cluster job): argparse would list every choice in ``{...}``, or print
    ``==SUPPRESS==`` for a suppressed help."""

    @property
    def metavar(self) -> str:
        return "{" + ",".join(action.dest for action in self._choices_actions) + "}"

    @metavar.setter
    def metavar(self, value: object) -> None:
        pass


def build_parser(prog: str = "python -m ambient_bench") -> argparse.ArgumentParser:
    from ambient_bench import __version__

    parser = argparse.ArgumentParser(prog=prog,
                                     description="Benchmark harness for diffusion models trained on bad data.")
    parser.add_argument("--version", action="version", version=f"ambient_bench {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an unexpected error, print the whole traceback (as with AMBIENT_BENCH_DEBUG=1) "
                             "instead of one line")
    parser.add_argument("--offline", action="store_true",
                        help="never touch the network: pretrained weights must already be cached (as with "
                             "AMBIENT_BENCH_OFFLINE=1 or HF_HUB_OFFLINE=1)")
    sub = parser.add_subparsers(dest="command", required=True, action=_Commands)
    for name, helptext in (("run", "execute what is missing, skip what is done, resume what was interrupted"),
                           ("plan", "list every stage with its key and state; runs nothing")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("suite", help="suite YAML file, e.g. benchmarks/smoke_cpu.yaml").complete = FILE
        p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.duration_kimg=2 train.seed=[0,1]")
        p.add_argument("--runs", default="runs", help="run store directory (default: runs)")
        p.add_argument("--profile", default="full", choices=PROFILES,
                       help="full (the suite as written) or tiny (every size shrunk, same stages; runs in RUNS/tiny)")
        if name == "plan":
            p.add_argument("--gpu", default="v100", choices=("v100", "a100", "h100", "h200"), type=str.lower,
                           help="device kind for the GPU-hour estimate: measured or published throughput where "
                                "ambient_bench/engine/throughput.yaml has it, else scaled by FLOPs (default v100)")
        if name == "run":
            p.add_argument("--results", help="results directory (default: the suite's results_dir)")
            p.add_argument("--expect-cached", action="store_true",
                           help="run nothing and exit 1 unless every stage is already done (for CI)")
            policy = p.add_mutually_exclusive_group()
            policy.add_argument("--keep-going", action="store_true",
                                help="after a failed stage, run every stage that does not read it (the default)")
            policy.add_argument("--fail-fast", action="store_true", help="stop at the first failed stage")
            p.add_argument("--workers", type=int, default=1,
                           help="worker processes sharing the run store (each 1/N of the CPU threads, or one GPU "
                                "each of CUDA_VISIBLE_DEVICES); other `run` commands on the same store join in too")
            p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of --workers
            p.add_argument("--launcher", default="none", choices=("none", "slurm", "local"),
                           help="slurm: one job array per stage kind and dependency wave, with the suite's "
                                "resources; local: one job per stage on this machine (submitit's local executor)")
            p.add_argument("--dry-run", action="store_true",
                           help="with --launcher slurm: write the sbatch scripts and submit.sh, submit nothing")
            p.add_argument("--cluster", metavar="FILE",
                           help="with --launcher slurm: partition, account, qos and partition limits (default "
                                "$AMBIENT_BENCH_CLUSTER, else ~/.config/ambient_bench/cluster.yaml if present)")
        if name == "plan":
            p.add_argument("--verify", action="store_true",
                           help="also compare the sha256 of every done stage's outputs with its done marker")
    p = sub.add_parser("stage")  # hidden (no help: not listed): one stage, the body of a job (engine/launch.py)
    p.add_argument("suite").complete = FILE
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--runs", default="runs")
    p.add_argument("--profile", default="full", choices=PROFILES)
    p.add_argument("--stage", required=True, help="kind:key (the first 16 hex digits, as `plan` shows), or @LIST: "
                                                  "line $SLURM_ARRAY_TASK_ID of LIST (a task of a job array)")
    p = sub.add_parser("status", help="per stage: done / running (where, since when, progress) / queued / blocked / "
                                      "failed or cancelled (reason, job, log) / missing; exit 0 only when all are done")
    p.add_argument("suite").complete = FILE
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--runs", default="runs", help="run store directory (default: runs)")
    p.add_argument("--profile", default="full", choices=PROFILES)
    p = sub.add_parser("list", help="registered components and their parameters")
    p.add_argument("kind", nargs="?", help=f"one of {', '.join(KINDS)}")
    p.add_argument("--suite", help="also the components this suite's plugins: register")
    p = sub.add_parser("tables", help="re-render a suite's tables from its stored results, and its report page "
                                      "index.html when --runs holds the suite's samples")
    p.add_argument("suite").complete = FILE
    p.add_argument("--results", help="results directory (default: the suite's results_dir)")
    p.add_argument("--runs", default="runs", help="run store (where a tiny profile's results are)")
    p.add_argument("--profile", default="full", choices=PROFILES)
    p.add_argument("--check", action="store_true", help="exit 1 if the tables on disk differ from a re-render")
    p = sub.add_parser("report", help="write results/<suite>/index.html: tables with intervals, metric plots, "
                                      "samples, training curves, annotation figures, provenance (run does it too)")
    p.add_argument("suite").complete = FILE
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--results", help="results directory (default: the suite's results_dir)")
    p.add_argument("--runs", default="runs", help="run store (samples and training logs are read from it)")
    p.add_argument("--profile", default="full", choices=PROFILES)
    p = sub.add_parser("standins", help="write small synthetic CIFAR-10 / FFHQ / AFHQ / ImageNet stand-ins in the real "
                                        "file formats (for tests and --profile tiny); never used unless pointed at")
    p.add_argument("folder", help="where to write them; then export AMBIENT_BENCH_DATA=<folder>").complete = FOLDER
    p.add_argument("--per-class", type=int, default=24, help="images per class and batch file (default 24)")
    p = sub.add_parser("index", help="write results/README.md: every committed result suite, the paper table it "
                                     "mirrors, its status and how to regenerate it")
    p.add_argument("--results", default="results", help="the results folder (default results)")
    p.add_argument("--check", action="store_true", help="exit 1 if the index on disk is stale")
    from ambient_bench.compare import add_arguments as compare_arguments

    compare_arguments(sub.add_parser("compare", help="does my bad data help? good / bad (/ out-of-distribution) "
                                                     "folders → a suite beside the results, run, table, verdicts"))
    p = sub.add_parser("show", help="write a picture: a corruption gallery")
    p.add_argument("what", choices=["corruptions"])
    p.add_argument("--dataset", required=True, help="name or YAML mapping, e.g. '{name: digits, resolution: 32}'")
    p.add_argument("--corruption", action="append", help="name (all its gallery strengths) or YAML mapping; repeatable")
    p.add_argument("--count", type=int, default=8, help="images per row")
    p.add_argument("--cell", type=int, default=64, help="pixels per image in the picture")
    p.add_argument("--out", help="PNG path (default results/figures/corruptions_<dataset>.png)")
    from ambient_bench.weights_cli import add_parser as add_weights_parser

    add_weights_parser(sub)
    p = sub.add_parser("completion", help="print a shell completion script for the ambient-bench command, e.g. "
                                          "`python -m ambient_bench completion bash > "
                                          "~/.local/share/bash-completion/completions/ambient-bench`")
    p.add_argument("shell", choices=SHELLS)
    for command in sub.choices.values():  # `run suite.yaml --debug` as well as `--debug run suite.yaml`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def cmd_completion(args: argparse.Namespace) -> int:
    try:
        import shtab
    except ImportError:
        raise UserError("completion needs the shtab package: pip install shtab") from None
    parser = build_parser(prog="ambient-bench")  # the console script; `python -m` cannot be completed
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; Ctrl-C → 130 with one line, a closed stdout pipe → 141 silently, bad input → 2 in one
    line, any other error → 1 in one line (its traceback with --debug or AMBIENT_BENCH_DEBUG=1)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:
        # the reader went away (`list | head -1`): say nothing more; point stdout at devnull so that
        # Python's own flush at exit does not raise again (the Python docs' recipe for SIGPIPE)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process killed by it
    except Exception as err:
        if _caused_by_interrupt(err):  # Ctrl-C inside an import: numpy re-raises it as an ImportError
            return _interrupted()
        if _debugging():
            raise
        from ambient_bench.fileio import error_line

        text = error_line(err)
        print(f"error: {type(err).__name__}" + (f": {text}" if text else "")
              + " (run with --debug for the traceback)", file=sys.stderr, flush=True)
        return 1


_DEBUG = False  # set by --debug


def _debugging() -> bool:
    """Tracebacks for errors nobody anticipated: with --debug or AMBIENT_BENCH_DEBUG=1, else one line."""
    return _DEBUG or os.environ.get("AMBIENT_BENCH_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _interrupted() -> int:
    print("interrupted: finished stages are kept; re-run the same command to resume", file=sys.stderr)
    return 130


def _caused_by_interrupt(err: BaseException | None) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    # Overrides may come after options too (`run suite.yaml --runs x train.seed=1`).
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    global _DEBUG
    _DEBUG = bool(getattr(args, "debug", False))
    if args.offline:  # before any hub library reads its environment
        os.environ["AMBIENT_BENCH_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    retain_freed_memory()  # CPU forward passes would otherwise page-fault their activations in each time
    threads = os.environ.get("AMBIENT_BENCH_THREADS")
    if threads:  # a worker of `run --workers N` gets its share of the cores
        import torch

        torch.set_num_threads(int(threads))
    worker = os.environ.get("AMBIENT_BENCH_WORKER")
    if worker is not None and getattr(args, "worker", False):
        global _PREFIX
        _PREFIX = f"[w{worker}] "
    handler = {"run": cmd_run, "plan": cmd_plan, "status": cmd_status, "stage": cmd_stage, "list": cmd_list,
               "tables": cmd_tables, "show": cmd_show, "standins": cmd_standins, "index": cmd_index,
               "report": cmd_report, "weights": cmd_weights, "compare": cmd_compare,
               "completion": cmd_completion}[args.command]
    try:
        return handler(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return UserError.exit_code
