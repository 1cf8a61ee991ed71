"""Third-party libraries' console chatter, sent to the running stage's log instead of the console.

torch-fidelity prints ``Creating feature extractor "digits-cnn" with features [...]`` on stderr,
and download helpers draw their own progress bars; in the middle of a suite's output those lines
say nothing a user can act on. ``quiet("torch-fidelity")`` around such a call keeps them, line by
line, in the stage's ``log.txt`` (the ``ambient_bench.stage`` logger, which the run store points at
that file while a stage runs; outside a stage they go wherever that logger goes, by default nowhere
below a warning).
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Iterator

STAGE_LOG = logging.getLogger("ambient_bench.stage")  # the same logger as engine/store.py's


@contextlib.contextmanager
def quiet(source: str) -> Iterator[None]:
    """Capture what the block prints (stdout and stderr) into the stage log, prefixed by ``source``."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        for line in buffer.getvalue().split("\n"):
            line = line.split("\r")[-1].strip()  # a progress bar: its last state
            if line:
                STAGE_LOG.info(f"[{source}] {line}")
