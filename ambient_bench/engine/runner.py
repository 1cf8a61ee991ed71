"""Plan and execute a suite: unique stages in dependency order, skip what is done."""
from __future__ import annotations

import re

import time
from dataclasses import dataclass
from typing import Callable

from ambient_bench.config.suite import Suite
from ambient_bench.engine.cells import Stage, cell_stages
from ambient_bench.engine.stages import WORK, Context
from ambient_bench.engine.keys import canonical_json
from ambient_bench.engine.store import RunStore
from ambient_bench.config.schema import brief_label
from ambient_bench.errors import UserError
from ambient_bench.registry import DATASETS, METHODS, METRICS
from ambient_bench.training import distributed


def _quiet(message: str) -> None:
    """The log of ranks other than 0: rank 0 reports for all."""


@dataclass
class Graph:
    stages: list[Stage]                 # unique, dependencies first
    cells: list[dict[str, Stage]]       # per cell: stage name → stage
    users: dict[tuple[str, str], int]   # (kind, key) → number of cells that need it


def build_graph(suite: Suite) -> Graph:
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
    seen: dict[str, dict] = {}
    for cell in suite.cells:
        heldout = cell.config["evaluate"]["heldout_reference"]
        for spec in [cell.config["dataset"], *cell.config["mix"]["ood"], *([heldout] if heldout else [])]:
            seen.setdefault(canonical_json(spec), spec)
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
    for spec in _datasets(suite):
        try:
            DATASETS.build(spec).check()
        except UserError as err:
            if str(err) not in problems:
                problems.append(str(err))
    _one_line(problems)


def check_requirements(suite: Suite) -> None:
    """Every method and metric has what it needs (e.g. pretrained weights): otherwise one UserError
    line naming each missing file, its URL and its folder."""
    problems, seen = [], set()
    for cell in suite.cells:
        metrics = [("metric", m) for m in cell.config["evaluate"]["metrics"]]
        for kind, spec in [("method", cell.config["method"]), *metrics]:
            identity = canonical_json(spec)
            if identity in seen:
                continue
            seen.add(identity)
            try:
                (METHODS if kind == "method" else METRICS).build(spec).check()
            except UserError as err:
                if str(err) not in problems:
                    problems.append(str(err))
    _one_line(problems)


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


def execute(graph: Graph, store: RunStore, log: Callable[[str], None] = print) -> dict[str, int]:
    """Run every stage that is not done; returns counts of ran / skipped stages.

    Under torchrun (see training/distributed.py) rank 0 runs every stage; the other ranks run
    only the training stages beside it, and every rank waits for the others after each stage.
    """
    ctx = Context(store=store, log=log)
    todo = [s for s in graph.stages if store.state(s.kind, s.key) != "done"]
    if distributed.world_size() > 1:
        distributed.barrier()  # every rank has its to-do list before rank 0 changes the store
        if not distributed.is_main():
            for stage in todo:
                if stage.kind == "train":
                    WORK[stage.kind](stage, store.dir(stage.kind, stage.key), Context(store=store, log=_quiet))
                distributed.barrier()
            return {"ran": len(todo), "skipped": len(graph.stages) - len(todo)}
    log(f"{len(graph.stages)} stages: {len(graph.stages) - len(todo)} done, {len(todo)} to run")
    for n, stage in enumerate(todo, 1):
        state = store.state(stage.kind, stage.key)
        log(f"[{n}/{len(todo)}] {stage.kind} {stage.key[:16]} ({stage.describe})"
            + (" — resuming" if state == "partial" else ""))
        started = time.perf_counter()
        store.execute(stage.kind, stage.key, stage.material, stage.runtime,
                      lambda out, stage=stage: WORK[stage.kind](stage, out, ctx))
        log(f"      done in {_duration(time.perf_counter() - started)}")
        distributed.barrier()
    return {"ran": len(todo), "skipped": len(graph.stages) - len(todo)}
