"""The paper's published numbers as data (``benchmarks/reference/*.yaml``), validated on load.

A reference file holds one entry per paper table::

    tables:
      table2a:
        caption: "Table 2(a): ..."
        status: not-run                 # one of STATUSES; a reason is required where it says why
        suite: benchmarks/paper/table2a_cifar_blur.yaml
        keys: [method.name, method.annotate, mix.corruption.sigma]
        quantities:
          fid: {label: FID, better: lower, tolerance: 0.3}
        rows:
          - {match: {method.name: all_data, mix.corruption.sigma: 1.0}, label: All data, values: {fid: 45.32}}

A row's ``match`` names the configuration in our suites' vocabulary (dotted config keys, only
those declared in ``keys``), so a table spec of any layout can place the paper's number beside
ours, and ``compare`` finds the paper's number for a cell of our results. ``tolerance`` is the
largest absolute difference that still counts as reproduced; ``tables --check`` holds a table
whose status is ``reproduced`` to it. A typo'd key, an unknown row key or quantity, or a status
outside the fixed set is a one-line error naming ``file:line``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ambient_bench.config import yamlio
from ambient_bench.config.schema import SECTION_NAMES, Section
from ambient_bench.errors import UserError
from ambient_bench.params import Param, ParamError, resolve_params, suggest

STATUSES = ("not-run", "different-protocol", "running", "reproduced", "not-reproduced", "not-supported")
NEEDS_REASON = ("different-protocol", "not-supported")

QUANTITY = Section("quantity", {
    "label": Param(help="column header (Markdown)", kind=str),
    "latex": Param(None, "column header (LaTeX); default: label", kind=str, nullable=True),
    "fmt": Param("{:.2f}", "format of the numbers", kind=str),
    "better": Param(None, "lower or higher", kind=str, nullable=True, choices=("lower", "higher")),
    "tolerance": Param(None, "largest |ours − paper| that counts as reproduced (absolute)", ge=0, nullable=True),
})
ROW = Section("row", {
    "match": Param(help="the configuration of this row: dotted config key → value", kind=dict),
    "label": Param(help="the paper's name for the row", kind=str),
    "values": Param(help="quantity → the paper's number (null = not reported)", kind=dict),
    "note": Param(None, "what the paper says beside the number", kind=str, nullable=True),
})
TABLE = {
    "caption": Param(help="the paper's caption and protocol, one line", kind=str),
    "status": Param(help=f"how far ambient_bench reproduces it: {', '.join(STATUSES)}", kind=str, choices=STATUSES),
    "reason": Param(None, "why (required for different-protocol and not-supported)", kind=str, nullable=True),
    "suite": Param(None, "the suite that reproduces it (path from the repository root)", kind=str, nullable=True),
    "results": Param(None, "where its committed results are (path from the repository root)", kind=str,
                     nullable=True),
    "keys": Param(help="config keys a row's match may use", kind=list, item=str),
    "quantities": Param(help="quantity name → how it is shown", kind=dict),
    "rows": Param(help="the paper's numbers, one entry per row (and column group)", kind=list),
}
TOP = {
    "source": Param(help="the publication", kind=str),
    "tables": Param(help="table id → its entry", kind=dict),
}


def canonical(value: Any) -> str | None:
    """One text per value, however it reached us (YAML, a results CSV via pandas, JSON):
    numbers without a trailing ``.0`` (2.0 → "2", inf → "inf"), None / NaN → None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "true" if value else "false"
    if isinstance(value, (int, float)) or type(value).__name__.startswith(("int", "float")):
        number = float(value)
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def matches_value(value: Any, pattern: Any) -> bool:
    """``value`` (from a suite cell or results.csv, where lists and mappings are JSON text) has what
    ``pattern`` says: numbers compare as numbers, None equals NaN, a mapping pattern needs only its
    own keys (``{name: afhq, animal: cat}`` matches a dataset spec that also has a resolution)."""
    if isinstance(pattern, (list, dict)) and isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return False
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(matches_value(value.get(k), p) for k, p in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and len(value) == len(pattern) and all(
            matches_value(v, p) for v, p in zip(value, pattern))
    return canonical(value) == canonical(pattern)


@dataclass(frozen=True)
class RefRow:
    match: dict[str, Any]
    label: str
    values: dict[str, float | None]
    note: str | None
    line: int

    def matches(self, config: Mapping[str, Any]) -> bool:
        """True when every key of ``match`` has this value in ``config`` (flat dotted keys)."""
        return all(matches_value(config.get(key), value) for key, value in self.match.items())


@dataclass(frozen=True)
class RefTable:
    id: str
    path: Path
    source: str
    caption: str
    status: str
    reason: str | None
    suite: str | None
    results: str | None
    keys: list[str]
    quantities: dict[str, dict[str, Any]]
    rows: list[RefRow]

    @property
    def status_text(self) -> str:
        return self.status + (f" — {self.reason}" if self.reason else "")

    def lookup(self, config: Mapping[str, Any]) -> RefRow | None:
        """The paper's row for one of our cells (flat dotted config), or None; the most specific
        match wins (a row that names σ_B beats one that does not)."""
        found = [row for row in self.rows if row.matches(config)]
        return max(found, key=lambda row: len(row.match)) if found else None


def _fail(path: Path, lines: dict, key: tuple, message: str) -> UserError:
    for n in range(len(key), -1, -1):
        if key[:n] in lines:
            return UserError(f"{path}:{lines[key[:n]]}: {message}")
    return UserError(f"{path}: {message}")


def _table(path: Path, lines: dict, source: str, table_id: str, raw: Any) -> RefTable:
    base = ("tables", table_id)
    try:
        entry = resolve_params(TABLE, raw, base, what=f"reference table '{table_id}'")
        if entry["status"] in NEEDS_REASON and not entry["reason"]:
            raise ParamError(base + ("status",), f"status {entry['status']} needs a reason: add reason: \"...\"")
        for i, key in enumerate(entry["keys"]):
            if key.split(".")[0] not in SECTION_NAMES:
                raise ParamError(base + ("keys", i), f"'{key}' is not a config key (sections: "
                                                     f"{', '.join(SECTION_NAMES)})" + suggest(key.split('.')[0],
                                                                                            SECTION_NAMES))
        quantities = {name: QUANTITY.resolve(spec, base + ("quantities", name))
                      for name, spec in entry["quantities"].items()}
        rows = []
        for i, raw_row in enumerate(entry["rows"]):
            where = base + ("rows", i)
            row = ROW.resolve(raw_row, where)
            for key in row["match"]:
                if key not in entry["keys"]:
                    raise ParamError(where + ("match", key), f"unknown row key '{key}' in table '{table_id}'"
                                     + suggest(key, entry["keys"]) + f" (declared keys: {', '.join(entry['keys'])})")
            for name, value in row["values"].items():
                if name not in quantities:
                    raise ParamError(where + ("values", name), f"unknown column '{name}' in table '{table_id}'"
                                     + suggest(name, quantities) + f" (declared quantities: {', '.join(quantities)})")
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise ParamError(where + ("values", name), f"expected a number or null, got {value!r}")
            values = {k: (None if v is None else float(v)) for k, v in row["values"].items()}
            rows.append(RefRow(dict(row["match"]), row["label"], values, row["note"], lines.get(where, 0)))
    except ParamError as err:
        raise _fail(path, lines, err.key, err.message) from None
    return RefTable(id=table_id, path=path, source=source, caption=entry["caption"], status=entry["status"],
                    reason=entry["reason"], suite=entry["suite"], results=entry["results"], keys=entry["keys"],
                    quantities=quantities, rows=rows)


_CACHE: dict[tuple[str, int, int], dict[str, RefTable]] = {}


def load_reference(path: Path) -> dict[str, RefTable]:
    """Every table of a reference file (validated); a problem is a one-line ``UserError`` at file:line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference file '{path}' not found")
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _CACHE:
        raw, lines = yamlio.load(path)
        try:
            top = resolve_params(TOP, raw or {}, (), what="the reference file")
        except ParamError as err:
            raise _fail(path, lines, err.key, err.message) from None
        _CACHE[memo] = {tid: _table(path, lines, top["source"], tid, entry) for tid, entry in top["tables"].items()}
    return _CACHE[memo]


def reference_table(path: Path, table_id: str, where: str) -> RefTable:
    tables = load_reference(path)
    if table_id not in tables:
        raise UserError(f"{where}: no table '{table_id}' in {path}" + suggest(table_id, tables)
                        + f" (tables: {', '.join(tables)})")
    return tables[table_id]
