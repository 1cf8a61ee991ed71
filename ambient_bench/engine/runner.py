"""Plan and execute a suite: unique stages in dependency order, skip what is done."""
from __future__ import annotations

import contextlib
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ambient_bench import fileio
from ambient_bench.config.suite import Suite
from ambient_bench.engine.cells import Stage, cell_stages
from ambient_bench.engine.stages import WORK, Context
from ambient_bench.engine.keys import canonical_json
from ambient_bench.engine.store import RunStore, StageBusy
from ambient_bench.config.schema import as_list, brief_label
from ambient_bench.datasets import manifest
from ambient_bench.errors import UserError
from ambient_bench.fencing import LockLost
from ambient_bench.registry import DATASETS, METHODS, METRICS
from ambient_bench import distributed


def _quiet(message: str) -> None:
    """The log of ranks other than 0: rank 0 reports for all."""


@dataclass
class Graph:
    stages: list[Stage]                 # unique, dependencies first
    cells: list[dict[str, Stage]]       # per cell: stage name → stage
    users: dict[tuple[str, str], int]   # (kind, key) → number of cells that need it


def build_graph(suite: Suite) -> Graph:
    manifest.forget()  # data fingerprints are taken afresh for every graph
    ordered: list[Stage] = []
    seen: dict[tuple[str, str], Stage] = {}
    users: dict[tuple[str, str], int] = {}

    def visit(stage: Stage) -> Stage:
        ident = (stage.kind, stage.key)
        if ident in seen:
            return seen[ident]
        stage.deps = {name: visit(dep) for name, dep in stage.deps.items()}
        seen[ident] = stage
        ordered.append(stage)
        return stage

    cells = []
    for cell in suite.cells:
        stages = {name: visit(stage) for name, stage in cell_stages(cell.config).items()}
        for stage in {id(s): s for s in stages.values()}.values():
            users[(stage.kind, stage.key)] = users.get((stage.kind, stage.key), 0) + 1
        cells.append(stages)
    return Graph(ordered, cells, users)


def _datasets(suite: Suite) -> list[dict]:
    """Every dataset spec a suite reads (training data, out-of-distribution sources, references), once."""
    return [spec for spec, _ in _located_datasets(suite)]


def _located_datasets(suite: Suite) -> list[tuple[dict, str | None]]:
    """(dataset spec, the suite's file:line that names it), each spec once."""
    seen: dict[str, tuple[dict, str | None]] = {}
    for cell in suite.cells:
        heldout = cell.config["evaluate"]["heldout_reference"]
        located = [(cell.config["dataset"], ("dataset",))]
        located += [(spec, ("mix", "ood", i)) for i, spec in enumerate(cell.config["mix"]["ood"])]
        located += [(heldout, ("evaluate", "heldout_reference"))] if heldout else []
        for spec, path in located:
            seen.setdefault(canonical_json(spec), (spec, cell.locate(path)))
    return list(seen.values())


def _one_line(problems: list[str]) -> None:
    """One UserError for every problem found; components that miss the same file are named together."""
    merged: dict[str, list[str]] = {}
    for problem in problems:
        match = re.match(r"^((?:metric|method) '[^']+'): (.*)$", problem)
        who, what = (match.group(1), match.group(2)) if match else ("", problem)
        merged.setdefault(what, []).append(who)
    lines = [(", ".join(w for w in who if w) + ": " if any(who) else "") + what for what, who in merged.items()]
    if lines:
        raise UserError(lines[0] if len(lines) == 1 else f"{len(lines)} inputs missing: " + " | ".join(lines))


def check_data(suite: Suite) -> None:
    """Every dataset a suite reads is on disk (or needs none): otherwise one UserError line naming
    each missing file and where to get it."""
    problems = []
    for spec, where in _located_datasets(suite):
        try:
            DATASETS.build(spec).check()
        except UserError as err:
            line = f"{where}: {err}" if where else str(err)
            if line not in problems:
                problems.append(line)
    _one_line(problems)


def check_requirements(suite: Suite, fetch: bool = True) -> list[str]:
    """Every method and metric has what it needs (e.g. pretrained weights, fetched on first use): otherwise one
    UserError line naming each missing file, its URL and its folder. ``fetch=False`` (``plan``, ``--dry-run``):
    no download; the weights a stage would fetch are returned as notes instead of failing."""
    from ambient_bench import weights

    problems, seen = [], set()
    with contextlib.ExitStack() as stack:
        deferred = stack.enter_context(weights.deferred()) if not fetch else []
        for cell in suite.cells:
            metrics = [("metric", m) for m in cell.config["evaluate"]["metrics"]]
            latent = cell.config.get("latent") or {}
            vae = [("latent", latent)] if latent.get("vae") not in (None, "tiny") else []
            for kind, spec in [("method", cell.config["method"]), *metrics, *vae]:
                identity = canonical_json([kind, spec, cell.config["mix"]["corruption"] if kind == "method" else None])
                if identity in seen:
                    continue
                seen.add(identity)
                try:
                    _check_component(kind, spec, cell)
                except weights.Deferred:
                    continue
                except UserError as err:
                    if str(err) not in problems:
                        problems.append(str(err))
    _one_line(problems)
    names = list(dict.fromkeys(entry.name for entry in deferred))
    if not names:
        return []
    offline = weights.offline()
    return [f"note: weights not in the cache yet: {', '.join(names)}; the stages that read them download them on "
            f"first use" + (f", but this machine is offline ({offline})" if offline else "") + "; for an offline "
            "machine or compute node run `python -m ambient_bench weights fetch` where there is internet"]


def _check_component(kind: str, spec: dict, cell) -> None:
    if kind == "latent":
        from ambient_bench.latents.vae import vae_folder

        vae_folder(spec["vae"], spec.get("weights"))
        return
    component = (METHODS if kind == "method" else METRICS).build(spec)
    if kind == "method":  # first: a weights file deferred by check() must not skip this
        component.check_mix(as_list(cell.config["mix"]["corruption"]))
    component.check()


def standin_datasets(suite: Suite) -> list[str]:
    """Labels of the datasets a suite would read from stand-in data (see datasets/standins.py)."""
    return [brief_label("dataset", spec) for spec in _datasets(suite)
            if DATASETS.build(spec).fingerprint().get("standin")]


def plan_table(graph: Graph, store: RunStore) -> list[dict[str, str]]:
    return [{"stage": s.kind, "key": s.key[:16], "state": store.state(s.kind, s.key),
             "cells": str(graph.users[(s.kind, s.key)]), "what": s.describe} for s in graph.stages]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _descendants(graph: Graph, roots: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The stages that read (directly or not) any of ``roots``, roots included."""
    found = set(roots)
    for stage in graph.stages:  # dependencies come first, so one pass suffices
        if any((dep.kind, dep.key) in found for dep in stage.deps.values()):
            found.add((stage.kind, stage.key))
    return found


def find_corrupt(graph: Graph, store: RunStore, full: bool) -> dict[tuple[str, str], str]:
    """Done stages whose marker cannot vouch for their outputs → the problem (naming the file): the one
    notion of corrupt. ``full`` (``plan --verify``, and every ``run`` through ``recompute_corrupt``)
    compares hashes and looks for unlisted files; otherwise only the marker and the sizes are checked."""
    found = {}
    for stage in graph.stages:
        problem = store.problem(stage.kind, stage.key, full=full)
        if problem:
            found[(stage.kind, stage.key)] = problem
    return found


def recompute_corrupt(graph: Graph, store: RunStore, log: Callable[[str], None]) -> int:
    """Discard every stage ``plan --verify`` flags (``find_corrupt`` with hashes, every done stage of the
    graph) and every stage downstream of one, saying so in one line each; the count."""
    corrupt = find_corrupt(graph, store, full=True)
    if not corrupt:
        return 0
    affected = _descendants(graph, set(corrupt))
    for (kind, key), problem in corrupt.items():
        below = len(_descendants(graph, {(kind, key)})) - 1
        log(f"corrupt: stage {kind} {key[:16]}: {problem}; recomputing it"
            + (f" and the {below} stages that read it" if below else ""))
    for stage in graph.stages:
        if (stage.kind, stage.key) in affected and store.state(stage.kind, stage.key) != "missing":
            store.discard(stage.kind, stage.key)
    return len(affected)


def _failure_line(err: BaseException) -> str:
    text = fileio.error_line(err)
    return text if isinstance(err, UserError) else f"{type(err).__name__}: {text}"


POLL_SECONDS = 0.5  # how often a worker with nothing ready looks again
SPLIT_KINDS = ("train", "sample", "annotate", "evaluate")  # stages every rank works on under torchrun


def execute(graph: Graph, store: RunStore, log: Callable[[str], None] = print,
            keep_going: bool = True, on_stage: Callable[[str, str, str], None] | None = None) -> dict[str, Any]:
    """Run every stage that is not done; returns counts of ran / skipped stages and the failures.

    Any number of processes may run this on the same graph and store at once (``run --workers``,
    or several ``run`` commands, on one machine or several sharing the filesystem): each takes
    the next stage whose inputs are done and that no live process holds, waits only when nothing
    is ready, and returns when every stage is done or cannot run. A stage that raises is recorded
    as failed (its status.json keeps the traceback, so every worker sees it); with ``keep_going``
    every stage that does not read it still runs, otherwise no further stage starts; either way the
    failure is returned as one line, never raised.

    ``on_stage(event, kind, key)`` hears each ``start``, ``done``, ``failed``, ``blocked`` and ``elsewhere``
    (done by another worker): the suite-level progress line (``progress.SuiteProgress``).

    Under torchrun (ambient_bench/distributed.py) rank 0 runs every stage in order and the other ranks
    join the stages whose work splits (SPLIT_KINDS); a failure there stops every rank.
    """
    if distributed.world_size() > 1:
        return _execute_ranks(graph, store, log)
    began = store.clock()  # failures stamped since (status.json's mtime) are this run's: not retried
    recompute_corrupt(graph, store, log)
    ctx = Context(store=store, log=log)
    pending = [s for s in graph.stages if store.state(s.kind, s.key) != "done"]
    skipped = len(graph.stages) - len(pending)
    log(f"{len(graph.stages)} stages: {skipped} done, {len(pending)} to run")
    failed: dict[tuple[str, str], str] = {}   # (kind, key) → one line
    blocked: set[tuple[str, str]] = set()
    ran, waiting_since = 0, None
    tell = on_stage or (lambda event, kind, key: None)
    while pending and (keep_going or not failed):  # --fail-fast: nothing more starts after a failure
        progressed = False
        for stage in list(pending):
            ident = (stage.kind, stage.key)
            if store.state(stage.kind, stage.key) == "done":  # done by another worker
                pending.remove(stage)
                tell("elsewhere", *ident)
                continue
            bad = [dep for dep in stage.deps.values() if (dep.kind, dep.key) in set(failed) | blocked]
            if bad:
                blocked.add(ident)
                pending.remove(stage)
                tell("blocked", *ident)
                log(f"[{stage.kind} {stage.key[:16]}] not run: it reads the failed stage "
                    f"{bad[0].kind} {bad[0].key[:16]}")
                continue
            if any(store.state(dep.kind, dep.key) != "done" for dep in stage.deps.values()):
                continue  # not ready yet (another worker is on its inputs)
            line = _failed_since(store, stage.kind, stage.key, began)
            if line is not None:  # failed in another worker
                failed[ident] = line
                pending.remove(stage)
                tell("failed", *ident)
                continue
            if store.holder(stage.kind, stage.key) is not None:
                continue  # another live worker has it
            resuming = store.state(stage.kind, stage.key) == "partial"
            started = time.perf_counter()
            try:
                store.execute(stage.kind, stage.key, stage.material, stage.runtime,
                              lambda out, stage=stage, resuming=resuming: tell("start", *ident) or
                              _announce(stage, resuming, log) or WORK[stage.kind](stage, out, ctx))
            except StageBusy:
                continue  # taken by another worker between our look and our lock
            except LockLost as err:  # we were frozen and another worker took the stage over: it is theirs
                log(f"[{stage.kind} {stage.key[:16]}] {err}")
                continue  # seen next as done elsewhere, or still held by the other worker
            except Exception as err:  # noqa: BLE001 — recorded, reported in one line, the rest goes on
                failed[ident] = _failure_line(err)
                tell("failed", *ident)
                log(f"      FAILED: {failed[ident]} (details: {store.dir(stage.kind, stage.key) / 'status.json'})")
            else:
                ran += 1
                tell("done", *ident)
                log(f"      done in {_duration(time.perf_counter() - started)}")
            pending.remove(stage)
            progressed = True
            break  # look again from the start: the stages this one unblocked come first
        if pending and not progressed:
            if waiting_since is None:
                waiting_since = time.perf_counter()
                log(f"waiting: {len(pending)} stages are held by other workers or wait for their inputs")
            time.sleep(POLL_SECONDS)
        elif progressed:
            waiting_since = None
    return {"ran": ran, "skipped": skipped, "blocked": len(blocked),
            "failed": {f"{kind} {key[:16]}": line for (kind, key), line in failed.items()}}


def _failed_since(store: RunStore, kind: str, key: str, began: float) -> str | None:
    """The one-line reason of a stage that failed (in any worker) at or after ``began`` (the store's clock),
    else None. When it failed is read from status.json's mtime, stamped by the store's clock: the failing
    host's own ``failed_at`` may be skewed (a value in the future would block every retry) or not a number."""
    status = store.status(kind, key)
    if status.get("state") != "failed":
        return None
    written = store.status_time(kind, key)
    if written is None or written < began:
        return None
    line = status.get("line") or status.get("error", "failed")
    return line if isinstance(line, str) else "failed"


def failures_since(graph: Graph, store: RunStore, began: float) -> tuple[dict[str, str], int]:
    """Stages that failed since ``began`` (this machine's ``time.time()``; any worker) → their one line; and
    how many stages are not done because they read one."""
    began += store.clock() - time.time()  # on the store's clock, as status.json's mtime
    lines = {(s.kind, s.key): _failed_since(store, s.kind, s.key, began) for s in graph.stages
             if store.state(s.kind, s.key) != "done"}
    failed = {ident: line for ident, line in lines.items() if line is not None}
    below = _descendants(graph, set(failed)) - set(failed)
    blocked = sum(1 for s in graph.stages if (s.kind, s.key) in below and store.state(s.kind, s.key) != "done")
    return {f"{kind} {key[:16]}": line for (kind, key), line in failed.items()}, blocked


def _announce(stage: Stage, resuming: bool, log: Callable[[str], None]) -> None:
    log(f"[{stage.kind} {stage.key[:16]}] {stage.describe}" + (" — resuming" if resuming else ""))


def work_beside_main(stage: Stage, store: RunStore) -> None:
    """A rank other than 0 computes its share of a SPLIT_KINDS stage; rank 0 writes the stage's files."""
    with distributed.splitting(), tempfile.TemporaryDirectory(prefix="ambient-rank-") as scratch:
        # the training loop and the sampler write nothing off rank 0; files other work writes on
        # the way (annotation figures) go to a scratch folder here
        out = store.dir(stage.kind, stage.key) if stage.kind in ("train", "sample") else Path(scratch)
        WORK[stage.kind](stage, out, Context(store=store, log=_quiet))


def _execute_ranks(graph: Graph, store: RunStore, log: Callable[[str], None]) -> dict[str, Any]:
    """Under torchrun: rank 0 runs every stage in order, the others join the stages whose work splits
    (SPLIT_KINDS), and every rank waits for the others after each stage."""
    if distributed.is_main():
        recompute_corrupt(graph, store, log)  # as in one process: what `plan --verify` flags is recomputed
    distributed.barrier()
    todo = [s for s in graph.stages if store.state(s.kind, s.key) != "done"]
    distributed.barrier()  # every rank has its to-do list before rank 0 changes the store
    if not distributed.is_main():
        for stage in todo:
            if stage.kind in SPLIT_KINDS:
                work_beside_main(stage, store)
            distributed.barrier()
        return {"ran": len(todo), "skipped": len(graph.stages) - len(todo), "failed": {}, "blocked": 0}
    ctx = Context(store=store, log=log)
    log(f"{len(graph.stages)} stages: {len(graph.stages) - len(todo)} done, {len(todo)} to run")
    for stage in todo:
        started = time.perf_counter()
        with distributed.splitting() if stage.kind in SPLIT_KINDS else contextlib.nullcontext():
            store.execute(stage.kind, stage.key, stage.material, stage.runtime,
                          lambda out, stage=stage: _announce(stage, False, log) or WORK[stage.kind](stage, out, ctx))
        log(f"      done in {_duration(time.perf_counter() - started)}")
        distributed.barrier()
    return {"ran": len(todo), "skipped": len(graph.stages) - len(todo), "failed": {}, "blocked": 0}
