"""Progress that stays readable in CI logs: tqdm bars (with ETA) inside a stage, and one suite-level
line across stages (stages done / total, what runs, ETA from the stages' own cost estimates)."""
from __future__ import annotations

import sys
import time
from typing import IO, Any, Callable, Iterable

from tqdm.auto import tqdm

# no monitor thread (tqdm's maxinterval watchdog): a bar redraws when it advances, and no thread of
# ours outlives the work it reports on
tqdm.monitor_interval = 0


def bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if interactive else 15.0)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, file=sys.stderr, **kwargs)


def duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3.2 h``: as precise as an ETA deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class SuiteProgress:
    """``progress: 4/12 stages done, running train 3f2a…, ETA 6 min``.

    ``weights`` are the stages' estimated costs (``plan``'s hours, any unit: only ratios matter).
    The ETA scales the time the stages run here took by the estimated cost of those still to run,
    so it appears once one stage has finished. On a terminal the line is redrawn in place on stderr
    below the log; elsewhere (CI logs, pipes) a plain line is printed at a stage's start at most
    every ``every`` seconds.
    """

    def __init__(self, stages: list[tuple[str, str]], weights: list[float | None], done: set[tuple[str, str]],
                 stream: IO[str] | None = None, every: float = 30.0, clock: Callable[[], float] = time.monotonic):
        known = [w for w in weights if w]
        fallback = sorted(known)[len(known) // 2] if known else 1.0  # an unknown cost counts as a typical one
        self.weight = {ident: (w if w else fallback) for ident, w in zip(stages, weights)}
        self.done = set(done) & set(self.weight)
        self.failed: set[tuple[str, str]] = set()
        self.running: tuple[str, str] | None = None
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every, self.clock = every, clock
        self.began = self.last = clock()
        self.spent, self.spent_weight = 0.0, 0.0  # seconds and estimated cost of the stages run here
        self._stage_began = self.began
        self._drawn = False

    def line(self) -> str:
        total = len(self.weight)
        text = f"progress: {len(self.done)}/{total} stages done"
        if self.failed:
            text += f", {len(self.failed)} failed"
        if self.running:
            text += f", running {self.running[0]} {self.running[1][:8]}"
        left = sum(w for ident, w in self.weight.items() if ident not in self.done and ident not in self.failed)
        if self.spent_weight > 0 and left > 0:
            text += f", ETA {duration(self.spent / self.spent_weight * left)}"
        elif left == 0:
            text += f", took {duration(self.clock() - self.began)}"
        return text

    def event(self, what: str, kind: str, key: str) -> None:
        """``start``, ``done``, ``failed``, ``blocked`` or ``elsewhere`` (done by another worker) of stage
        (kind, key), as ``runner.execute`` reports them."""
        ident = (kind, key)
        now = self.clock()
        if what == "start":
            self.running, self._stage_began = ident, now
        else:
            if what == "done" and self.running == ident:
                self.spent += now - self._stage_began
                self.spent_weight += self.weight.get(ident, 0.0)
            if what in ("done", "elsewhere"):
                self.done.add(ident)
            else:
                self.failed.add(ident)
            if self.running == ident:
                self.running = None
        if self.tty:
            self.draw()
        elif what == "start" and now - self.last >= self.every:
            self.last = now
            print(self.line(), file=self.stream, flush=True)

    def clear(self) -> None:
        """Wipe the in-place line (before a log line is printed under it, and at the end)."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def draw(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
            self._drawn = True

    def wrap(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` with the in-place line moved below each line it prints."""
        if not self.tty:
            return log

        def wrapped(text: str) -> None:
            self.clear()
            log(text)
            self.draw()
        return wrapped
