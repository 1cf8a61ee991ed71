"""YAML loading that remembers where every key came from (for ``file:line`` errors).

Also fixes two YAML 1.1 traps of PyYAML: ``1e-3`` is read as a number (not the string
"1e-3"), and a key repeated in one mapping is an error instead of silently winning.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ambient_bench.errors import UserError

Path_ = tuple  # a key path: ("train", "lr") or ("grid", "method", 2)


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# A suite is a few hundred values; these bounds stop a file of aliases that expands to billions
# ("billion laughs") or a nesting that would exhaust the stack, before they cost anything.
MAX_VALUES = 100_000
MAX_DEPTH = 40
_PLAIN_TAGS = {"tag:yaml.org,2002:" + t for t in ("map", "seq", "str", "int", "float", "bool", "null", "merge",
                                                  "binary", "timestamp")}


class _Budget:
    def __init__(self) -> None:
        self.values = 0


def _convert(node: yaml.Node, path: Path_, loader: _Loader, lines: dict[Path_, int], source: str,
             budget: _Budget | None = None) -> Any:
    budget = budget or _Budget()
    budget.values += 1
    where = f"{source}:{node.start_mark.line + 1}"
    if budget.values > MAX_VALUES:
        raise UserError(f"{where}: the file expands to more than {MAX_VALUES:,} values (aliases of aliases?); "
                        f"a suite needs far fewer: write the values out or use fewer aliases")
    if len(path) > MAX_DEPTH:
        raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep; no suite key is")
    if node.tag not in _PLAIN_TAGS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise UserError(f"{where}: tag '{tag}' is not allowed: suites are plain YAML (mappings, lists, "
                        f"strings, numbers, booleans, null); remove the tag")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        # keys written in this mapping; a merge (`<<: *anchor`) only supplies defaults they override
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        written: set[Any] = set()
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in written and id(key_node) in own:
                raise UserError(f"{source}:{key_node.start_mark.line + 1}: key '{key}' appears twice "
                                f"in the same mapping; keep one")
            if id(key_node) in own:
                written.add(key)
            lines[path + (key,)] = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise UserError(f"{source}:{key_node.start_mark.line + 1}: a key must be a plain name, "
                                f"not a {type(key).__name__}")
            out[key] = _convert(value_node, path + (key,), loader, lines, source, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), loader, lines, source, budget) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML text; return the data and a map from key path to 1-based line."""
    loader = _Loader(text)
    lines: dict[Path_, int] = {}
    try:
        node = loader.get_single_node()
        return (None if node is None else _convert(node, (), loader, lines, source)), lines
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(err.problem or err).split())
        raise UserError(f"{source}{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{source}: invalid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise UserError(f"{source}: nested too deeply to read (no suite key is more than {MAX_DEPTH} "
                        f"levels deep)") from None
    finally:
        loader.dispose()


def load(path: Path) -> tuple[Any, dict[Path_, int]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"suite file '{path}' not found; pass the path of a YAML suite such as "
                        f"benchmarks/smoke_cpu.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {err.object[err.start]:#04x}); save the suite "
                        f"as UTF-8") from None
    except OSError as err:
        raise UserError(f"suite file '{path}' cannot be read ({err.strerror}); check its permissions") from None
    return parse(text, str(path))


def parse_scalar(text: str) -> Any:
    """A CLI override value, typed the way YAML would type it (``false``, ``0``, ``1e-3``, ``[0, 1]``)."""
    data, _ = parse(text, "<command line>")
    return "" if data is None and text.strip() == "" else data
