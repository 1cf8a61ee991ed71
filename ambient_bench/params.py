"""Declared parameters: defaults, types and validation for components and config sections.

Every configurable thing (a corruption, a method, the ``train`` section, ...) declares its
parameters as a ``dict[str, Param]``. ``resolve_params`` fills defaults, coerces types and
rejects unknown keys with a did-you-mean suggestion. Errors are raised as ``ParamError``
carrying the offending key so that the caller can attach a ``file:line`` location.
"""
from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

REQUIRED: Any = object()  # sentinel: the parameter has no default
MAX_INT = 2**31 - 1  # no count, size or seed of ours comes near it; larger ones are typos (1e20)
MAX_FLOAT = 1e12  # nor does any finite float parameter (a σ of 1e300 would allocate its kernel at run time)


class ParamError(Exception):
    """A problem with one parameter; ``key`` is the path below the validated mapping."""

    def __init__(self, key: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def suggest(word: str, choices: Iterable[str]) -> str:
    """A '; did you mean ...?' fragment, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


@dataclass(frozen=True)
class Param:
    """One declared parameter.

    ``kind`` is one of float, int, bool, str, list or a ``Nested`` / ``ComponentRef``
    (see ``ambient_bench.config.schema``). ``semantic=False`` marks knobs that cannot change
    results (device, batch size of inference): they are excluded from stage keys.
    """

    default: Any = REQUIRED
    help: str = ""
    kind: Any = float
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    semantic: bool = True
    item: Any = None  # element kind for kind=list
    check: Callable[[Any], str | None] | None = None  # extra validation: returns an error or None
    # Left out of stage keys while at its default: for parameters added after results were stored
    # whose default reproduces the old behaviour, so that adding them recomputes nothing.
    omit_default: bool = False
    allow_inf: bool = False  # float parameters are finite unless this is set (or the default is infinite)

    def describe(self) -> str:
        kind = getattr(self.kind, "__name__", None) or str(self.kind)
        if self.kind is list and self.item is not None:
            kind = f"list[{getattr(self.item, '__name__', self.item)}]"
        bits = [kind]
        if self.default is not REQUIRED:
            bits.append(f"default {self.default!r}")
        else:
            bits.append("required")
        for sym, bound in (("≥", self.ge), (">", self.gt), ("≤", self.le), ("<", self.lt)):
            if bound is not None:
                bits.append(f"{sym} {bound}")
        if self.choices:
            bits.append("one of " + "/".join(map(str, self.choices)))
        return ", ".join(bits)


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_name(value: Any) -> str | None:
    """A name that becomes a file or folder name (suite, table id): never a path."""
    if not value or set(value) - _NAME_CHARS or value.startswith(".") or len(value) > 128:
        return (f"'{value}' is not a name: use letters, digits, '_', '-' and '.' (not first), at most 128 "
                f"characters; it names a folder or file, so it cannot be a path")
    return None


def _coerce_scalar(value: Any, kind: Any, key: tuple) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ParamError(key, f"expected true/false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ParamError(key, f"expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(key, f"expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ParamError(key, f"expected a string, got {value!r}")
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise ParamError(key, f"expected a mapping, got {value!r}")
        return value
    raise TypeError(f"unsupported parameter kind {kind!r}")


def _name(key: tuple) -> str:
    names = [str(k) for k in key if isinstance(k, str)]
    return names[-1] if names else "value"


def validate_value(param: Param, value: Any, key: tuple) -> Any:
    """Coerce and check one value against its declaration."""
    if value is None:
        if param.nullable:
            return None
        raise ParamError(key, "may not be null")
    kind = param.kind
    if hasattr(kind, "resolve"):  # nested section or component reference
        return kind.resolve(value, key)
    if kind is list:
        if not isinstance(value, (list, tuple)):
            raise ParamError(key, f"expected a list, got {value!r}")
        out = list(value)
        if param.item is not None:
            out = [_coerce_scalar(v, param.item, key + (i,)) for i, v in enumerate(out)]
    else:
        out = _coerce_scalar(value, kind, key)
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        if isinstance(out, float) and math.isnan(out):
            raise ParamError(key, f"{_name(key)} may not be NaN")
        if isinstance(out, float) and math.isinf(out) and not (
                param.allow_inf or (isinstance(param.default, float) and math.isinf(param.default))):
            raise ParamError(key, f"{_name(key)} must be a finite number, got {out!r}")
        if isinstance(out, int) and abs(out) > MAX_INT:
            raise ParamError(key, f"{_name(key)} {out} is beyond any sensible size (at most {MAX_INT:,})")
        if isinstance(out, float) and math.isfinite(out) and abs(out) > MAX_FLOAT and not param.allow_inf:
            raise ParamError(key, f"{_name(key)} {out!r} is beyond any sensible value (at most {MAX_FLOAT:g} in "
                                  f"magnitude); fix the value")
        for ok, text, bound in (
            (param.ge is None or out >= param.ge, "≥", param.ge),
            (param.gt is None or out > param.gt, ">", param.gt),
            (param.le is None or out <= param.le, "≤", param.le),
            (param.lt is None or out < param.lt, "<", param.lt),
        ):
            if not ok:
                raise ParamError(key, f"{_name(key)} must be {text} {bound}, got {out!r}")
    if param.choices is not None and out not in param.choices:
        raise ParamError(key, f"must be one of {', '.join(map(repr, param.choices))}, got {out!r}"
                         + suggest(str(out), map(str, param.choices)))
    if param.check is not None:
        problem = param.check(out)
        if problem:
            raise ParamError(key, problem)
    return out


def resolve_params(spec: Mapping[str, Param], given: Mapping[str, Any],
                   key: tuple = (), what: str = "parameters") -> dict[str, Any]:
    """Validate ``given`` against ``spec``; return a complete dict in declaration order."""
    if not isinstance(given, Mapping):
        raise ParamError(key, f"expected a mapping of {what}, got {given!r}")
    for name in given:
        if name not in spec:
            valid = ", ".join(spec) or "none"
            raise ParamError(key + (name,), f"unknown key '{name}' in {what}"
                             + suggest(name, spec) + f" (valid: {valid})")
    out: dict[str, Any] = {}
    for name, param in spec.items():
        if name in given:
            out[name] = validate_value(param, given[name], key + (name,))
        elif param.default is REQUIRED:
            raise ParamError(key + (name,), f"missing required key '{name}' in {what}")
        elif param.default is not None and hasattr(param.kind, "resolve"):
            out[name] = param.kind.resolve(param.default, key + (name,))
        else:
            out[name] = copy.deepcopy(param.default)
    return out


def semantic_view(spec: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``values`` that can change results (enters stage keys)."""
    out = {}
    for name, value in values.items():
        param = spec.get(name)
        if param is not None and (not param.semantic or (param.omit_default and value == param.default)):
            continue
        kind = getattr(param, "kind", None)
        if hasattr(kind, "semantic") and value is not None:
            value = kind.semantic(value)
        out[name] = value
    return out
