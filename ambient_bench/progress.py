"""Progress bars (tqdm, with ETA) that stay readable in CI logs."""
from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm.auto import tqdm


def bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if interactive else 15.0)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, file=sys.stderr, **kwargs)
