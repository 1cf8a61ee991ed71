"""Relative paths in a suite: read beside the suite file, so a suite copied elsewhere keeps working.

Table specs fall back to the packaged ones (benchmarks/, benchmarks/tables/); dataset folders fall back to
the current directory (where suites written before this rule expect them)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ambient_bench.errors import UserError
from ambient_bench.registry import REGISTRIES

# the checkout's suites and table specs: the project is installed from its checkout (`pip install -e`, as the
# README and tox do); a non-editable install has no benchmarks/ and the error below says where it looked
PACKAGED = Path(__file__).resolve().parents[2] / "benchmarks"


def table_path(table: str, suite_path: Path, where: str) -> Path:
    """A table spec named in a suite: relative to the suite file, else among the packaged specs
    (benchmarks/<table>, benchmarks/tables/<table>), so a suite copied elsewhere keeps its tables."""
    given = Path(os.path.expanduser(table))
    tried = [given] if given.is_absolute() else [suite_path.parent / given, PACKAGED / given,
                                                 PACKAGED / "tables" / given.name]
    for candidate in tried:
        if candidate.is_file():
            return candidate.resolve()
    places = " nor ".join(str(p.absolute()) for p in dict.fromkeys(tried))
    raise UserError(f"{where}: table spec '{table}' not found: neither {places} exists (relative paths are "
                    f"tried against the suite's folder, then the packaged specs in {PACKAGED}/tables)")


def resolve_data_paths(config: dict[str, Any], suite_dir: Path) -> None:
    """Relative folders of the dataset (its location parameters: ``semantic=False`` strings) are read against
    the suite's folder when they exist there, else against the current directory as before. Locations are not
    in any key, so an absolute path changes no stored run."""
    cls = REGISTRIES["dataset"].get(config["dataset"]["name"])
    for name, param in cls.params.items():
        value = config["dataset"].get(name)
        if param.semantic or value is None:
            continue
        if isinstance(value, str):
            config["dataset"][name] = _near_suite(value, suite_dir)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            config["dataset"][name] = [_near_suite(v, suite_dir) for v in value]


def _near_suite(text: str, suite_dir: Path) -> str:
    path = Path(os.path.expanduser(text))
    if path.is_absolute() or not (suite_dir / path).exists() or (suite_dir.resolve() == Path.cwd().resolve()):
        return text
    return str((suite_dir / path).resolve())

