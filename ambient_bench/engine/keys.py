"""Stage keys: sha256 of the canonical JSON of exactly what a stage reads."""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def _normalise(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, float):
        if math.isinf(obj) or math.isnan(obj):
            return repr(obj)  # JSON has no inf/nan; their repr is stable
        return float(repr(obj))
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise TypeError(f"cannot put {type(obj).__name__} into a stage key: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Key-order independent, whitespace free JSON."""
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stage_key(kind: str, version: int, material: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"stage": kind, "stage_version": version, **material}).encode()).hexdigest()
