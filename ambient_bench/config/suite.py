"""A suite file → its list of fully resolved cells.

Precedence, lowest first: schema defaults < the suite's ``defaults`` < one value per ``grid``
axis < ``key=value`` overrides from the command line. Assigning a value at a dotted path
replaces the whole subtree there, so ``method: clean_only`` in a grid drops the defaults'
method parameters. An override of a grid axis replaces the axis (in every grid that has it); a list
given for a key that takes one value (``train.seed=[0,1]``) becomes a new axis of every grid.

``grid`` is one mapping of axes (cells = their cartesian product) or a list of such mappings:
the cells are then the union of the products, for tables whose rows are not one product
(the paper's Table 2(b): each source class has its own out-of-distribution sources and methods).
"""
from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ambient_bench.config import yamlio
from ambient_bench.config.paths import resolve_data_paths, table_path
from ambient_bench.config.profiles import apply_profile, check_distinct
from ambient_bench.config.resources import resolve_resources
from ambient_bench.config.schema import SECTION_NAMES, resolve_cell, spec_label
from ambient_bench.errors import UserError
from ambient_bench.params import Param, ParamError, check_name, resolve_params, suggest
from ambient_bench.registry import import_plugin

class _GridKind:
    """A grid mapping, or a non-empty list of grid mappings; resolved to the list form."""

    __name__ = "mapping or list of mappings"

    def resolve(self, value: Any, key: tuple) -> list[dict[str, Any]]:
        grids = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not value:
            raise ParamError(key, "a list of grids needs at least one grid mapping")
        for i, grid in enumerate(grids):
            if not isinstance(grid, dict):
                raise ParamError(key + ((i,) if isinstance(value, list) else ()),
                                 f"expected a mapping of dotted key → list of values, got {grid!r}")
        return grids


TOP_LEVEL = {
    "suite": Param(help="suite name (results go to results/<suite>)", kind=str, check=check_name),
    "description": Param("", "one line shown by `plan`", kind=str),
    "defaults": Param({}, "base configuration of every cell", kind=dict),
    "grid": Param({}, "dotted key → list of values; cells are the cartesian product (a list of such "
                      "mappings: the union of their products)", kind=_GridKind()),
    "exclude": Param([], "cells to drop: mappings of dotted key → value (or list of values)", kind=list),
    "tables": Param([], "table spec files, relative to the suite file (else benchmarks/tables/); none: the "
                       "default table of methods × metrics", kind=list, item=str),
    "results_dir": Param(None, "where results.csv and tables go (default results/<suite>)", kind=str,
                         nullable=True),
    "plugins": Param([], "modules or .py files (relative to the suite) that register components",
                     kind=list, item=str),
    "resources": Param({}, "SLURM resources per stage kind (run --launcher slurm; see config/resources.py)",
                       kind=dict),
}


@dataclass
class Cell:
    """One point of the grid: a complete, validated configuration."""

    config: dict[str, Any]
    axes: dict[str, Any]  # grid axis → the value this cell took
    where: dict[tuple, str] = field(default_factory=dict)  # key path → "file:line" (or the CLI override)

    def locate(self, path: tuple) -> str | None:
        """Where the value at ``path`` (or the nearest enclosing key) was set."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.where:
                return self.where[path[:n]]
        return None

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={spec_label(v)}" for k, v in self.axes.items()) or "(single cell)"


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    cells: list[Cell]
    tables: list[Path]
    results_dir: Path
    axes: list[str] = field(default_factory=list)
    profile: str = "full"
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage kind → SLURM settings


class _Tree:
    """A nested dict plus where each path was set (``file:line`` or a CLI override)."""

    def __init__(self, data: dict[str, Any], where: dict[tuple, str]) -> None:
        self.data, self.where = data, where

    def locate(self, path: tuple, fallback: str) -> str:
        for n in range(len(path), -1, -1):
            if path[:n] in self.where:
                return self.where[path[:n]]
        return fallback

    def assign(self, path: tuple, value: Any, where: dict[tuple, str]) -> None:
        node = self.data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if isinstance(child, str):  # component shorthand "clean_only" → {"name": "clean_only"}
                child = {"name": child}
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[path[-1]] = copy.deepcopy(value)
        self.where = {p: w for p, w in self.where.items() if p[:len(path)] != path}
        self.where.update(where)


def _dotted(key: Any, where: str) -> tuple:
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise UserError(f"{where}: '{key}' is not a dotted key such as train.seed")
    path = tuple(key.split("."))
    if path[0] not in SECTION_NAMES:
        raise UserError(f"{where}: unknown section '{path[0]}'{suggest(path[0], SECTION_NAMES)} "
                        f"(sections: {', '.join(SECTION_NAMES)})")
    return path


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping → {dotted key: leaf value}; lists stay as they are."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return _MISSING
    return data


_MISSING = object()


def _matches(value: Any, pattern: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(pattern, list):
        return any(_matches(value, p) for p in pattern)
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches(value.get(k, _MISSING), p) for k, p in pattern.items())
    if isinstance(value, dict) and isinstance(pattern, str):
        return value.get("name") == pattern
    return value == pattern


def load_suite(path: str | Path, overrides: list[str] = (), profile: str = "full") -> Suite:
    """Parse, expand and validate a suite; every problem is a one-line ``UserError``. A ``profile``
    other than 'full' rewrites every cell by its size rules (``config/profiles.py``)."""
    path = Path(path)
    source = str(path)
    raw, lines = yamlio.load(path)
    at = lambda p: f"{source}:{lines.get(p, 1)}"  # noqa: E731
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a suite must be a YAML mapping with at least 'suite' and 'defaults'")
    try:
        top = resolve_params(TOP_LEVEL, raw, (), what="the suite file")
    except ParamError as err:
        raise UserError(f"{at(err.key)}: {err.message}") from None
    for plugin in top["plugins"]:
        import_plugin(plugin, path.parent)

    defaults = _Tree(copy.deepcopy(top["defaults"]),
                     {p[1:]: f"{source}:{n}" for p, n in lines.items() if p[:1] == ("defaults",) and len(p) > 1})
    for section in defaults.data:
        _dotted(section, at(("defaults", section)))

    grids = top["grid"]
    listed = isinstance(raw.get("grid"), list)  # line numbers of list entries carry their index
    products: list[list[tuple[str, tuple, list[tuple[Any, dict]]]]] = []
    for g, grid in enumerate(grids):
        prefix = ("grid", g) if listed else ("grid",)
        axes: list[tuple[str, tuple, list[tuple[Any, dict]]]] = []
        for key, values in grid.items():
            where = at(prefix + (key,))
            grid_path = _dotted(key, where)
            if not isinstance(values, list) or not values:
                raise UserError(f"{where}: grid axis '{key}' needs a non-empty list of values")
            located = [(v, {grid_path + p[len(prefix) + 2:]: f"{source}:{n}" for p, n in lines.items()
                            if p[:len(prefix) + 2] == prefix + (key, i)}) for i, v in enumerate(values)]
            axes.append((key, grid_path, located))
        products.append(axes)

    resources = copy.deepcopy(top["resources"])
    for text in overrides:
        where = f"command-line override '{text}'"
        key, sep, value_text = text.partition("=")
        if not sep:
            raise UserError(f"{where}: expected key=value, e.g. train.duration_kimg=2")
        if key.strip().startswith("resources."):  # resources.train.gpus=4
            parts = key.strip().split(".")
            if len(parts) != 3 or not all(parts):
                raise UserError(f"{where}: expected resources.<stage kind>.<setting>=value, "
                                f"e.g. resources.train.gpus=4")
            section = resources.setdefault(parts[1], {})
            if not isinstance(section, dict):
                raise UserError(f"{where}: resources.{parts[1]} in the suite is not a mapping")
            section[parts[2]] = yamlio.parse_scalar(value_text)
            continue
        opath = _dotted(key.strip(), where)
        value = yamlio.parse_scalar(value_text)
        is_axis = any(a[1] == opath for axes in products for a in axes)
        if isinstance(value, list) and value and not is_axis and not _takes_list(defaults, products, opath, value):
            products = products or [[]]  # train.seed=[0,1] on a key that holds one value: a new grid axis
            is_axis = True
        if is_axis:  # a grid axis: replaced in every grid (added to every grid when new)
            values = value if isinstance(value, list) else [value]
            axis = (key.strip(), opath, [(v, {opath: where}) for v in values])
            for axes in products:
                found = [i for i, a in enumerate(axes) if a[1] == opath]
                if found:
                    axes[found[0]] = axis
                else:
                    axes.append(axis)
        else:
            defaults.assign(opath, value, {opath: where})

    excludes = []
    for i, entry in enumerate(top["exclude"]):
        if not isinstance(entry, dict) or not entry:
            raise UserError(f"{at(('exclude', i))}: each exclude entry is a mapping of dotted key → value")
        excludes.append({_dotted(k, at(("exclude", i, k))): v for k, v in entry.items()})

    def excluded(config: dict[str, Any]) -> bool:
        return any(all(_matches(_get(config, p), v) for p, v in ex.items()) for ex in excludes)

    candidates, used = [], set()  # used: exclude entries that dropped an invalid combination
    valid_combos: list[tuple[list, tuple]] = []  # (axes, combo) of each cell that resolved, for _check_shadowed
    for axes in products:
        for combo in itertools.product(*[a[2] for a in axes]) if axes else [()]:
            tree = _Tree(copy.deepcopy(defaults.data), dict(defaults.where))
            for (key, grid_path, _), (value, where) in zip(axes, combo):
                tree.assign(grid_path, value, where)
            try:
                candidates.append((resolve_cell(tree.data), {a[0]: v for a, (v, _) in zip(axes, combo)},
                                   tree.where))
                valid_combos.append((axes, combo))
            except ParamError as err:
                if excluded(tree.data):  # an excluded combination may be an invalid one
                    used.update(i for i, ex in enumerate(excludes)
                                if all(_matches(_get(tree.data, p), v) for p, v in ex.items()))
                    continue
                raise UserError(f"{tree.locate(err.key, source)}: {err.message}") from None
    _check_shadowed(defaults, valid_combos, source)
    known = {k for config, _, _ in candidates for k in flatten(config)}
    for i, entry in enumerate(excludes):
        for p in entry:
            key = ".".join(p)
            if not any(k == key or k.startswith(key + ".") for k in known):
                raise UserError(f"{at(('exclude', i, key))}: exclude key '{key}' is not a key of any cell"
                                + suggest(key, known))

    for i, entry in enumerate(excludes):  # an entry that drops nothing is a typo in its values
        if i not in used and not any(all(_matches(_get(config, p), v) for p, v in entry.items())
                                     for config, _, _ in candidates):
            raise UserError(f"{at(('exclude', i))}: exclude entry {i + 1} matches no cell of the grid; "
                            f"fix its values or remove it")
    cells, seen = [], set()
    for config, _, _ in candidates:
        resolve_data_paths(config, path.parent)
    for config, axes_taken, where in candidates:
        identity = json.dumps(config, sort_keys=True, default=str)
        if excluded(config) or identity in seen:
            continue
        seen.add(identity)
        cells.append(Cell(config=config, axes=axes_taken, where=where))
    if not cells:
        raise UserError(f"{source}: the grid and exclusions leave no cell to run")
    if profile != "full":
        cells = _with_profile(cells, profile, source)

    tables = [table_path(table, path, at(("tables", i))) for i, table in enumerate(top["tables"])]
    try:
        resolved_resources = resolve_resources(resources)
    except ParamError as err:
        raise UserError(f"{at(err.key) if err.key[:2] in lines or err.key[:1] in lines else source}: "
                        f"{'.'.join(map(str, err.key))}: {err.message}") from None
    results_dir = Path(top["results_dir"] or f"results/{top['suite']}")
    axis_names = list(dict.fromkeys(a[0] for axes in products for a in axes))
    return Suite(name=top["suite"], path=path, description=top["description"], cells=cells,
                 tables=tables, results_dir=results_dir, axes=axis_names, profile=profile,
                 resources=resolved_resources)


def _check_shadowed(defaults: _Tree, combos: list[tuple[list, tuple]], source: str) -> None:
    """A ``defaults`` value that every grid cell replaces is never part of a cell, yet checked as strictly: a
    typo there would bite the first time the grid changes. Each such value is put back into cells of the grid
    (the grid's other axes as they are) and must resolve there; a problem at its own path is a one-line error
    naming the defaults' line."""
    shadowed: dict[tuple, list] = {}
    for axes, combo in combos:
        for i, (_, grid_path, _) in enumerate(axes):
            if _get(defaults.data, grid_path) is not _MISSING:
                shadowed.setdefault(grid_path, []).append((axes, combo, i))
    for path, uses in shadowed.items():
        first = None
        for axes, combo, skip in uses[:4]:  # a few cells suffice: a bad value fails in every one
            tree = _Tree(copy.deepcopy(defaults.data), {})
            for i, ((_, grid_path, _), (value, _)) in enumerate(zip(axes, combo)):
                if i != skip:
                    tree.assign(grid_path, value, {})
            try:
                resolve_cell(tree.data)
            except ParamError as err:
                if tuple(err.key[:len(path)]) != path:
                    first = None  # the value is fine; another key of this combination is not (never a cell)
                    break
                first = first or err
                continue
            first = None
            break
        if first is not None:
            where = defaults.locate(first.key, source)
            raise UserError(f"{where}: defaults.{'.'.join(map(str, first.key))}: {first.message} (every grid cell "
                            f"replaces this value, but defaults are checked as strictly as cells: fix or remove it)")


def _with_profile(cells: list[Cell], profile: str, source: str) -> list[Cell]:
    shrunk = apply_profile(profile, [c.config for c in cells])
    try:
        shrunk = [resolve_cell(config) for config in shrunk]
    except ParamError as err:  # a rule produced an invalid value: a bug in the rules, said plainly
        raise UserError(f"{source}: profile {profile} makes an invalid cell at {'.'.join(map(str, err.key))}: "
                        f"{err.message}") from None
    check_distinct([json.dumps(c.config, sort_keys=True, default=str) for c in cells],
                   [json.dumps(c, sort_keys=True, default=str) for c in shrunk], [c.label for c in cells], profile)
    return [Cell(config=config, axes=cell.axes, where=cell.where) for cell, config in zip(cells, shrunk)]


def _takes_list(defaults: _Tree, products: list, opath: tuple, value: list) -> bool:
    """Whether ``opath`` accepts a list value (dataset.low_quality=[a,b]): set on the first cell of the
    grid, it validates, or fails at another key. Otherwise a list override is a grid axis."""
    tree = _Tree(copy.deepcopy(defaults.data), {})
    for axis in (products[0] if products else []):
        tree.assign(axis[1], axis[2][0][0], {})
    tree.assign(opath, value, {})
    try:
        resolve_cell(tree.data)
    except ParamError as err:
        return tuple(err.key[:len(opath)]) != opath
    return True
