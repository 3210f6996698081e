"""Where a worker's time goes: one clock that splits each batch's handling into named stages.

Stages nest (encoding happens inside post-processing); time spent in an inner stage is
charged to it alone, so the stages of a batch add up to its handling time. A worker
handles one batch at a time, so the worker has one clock, ``CLOCK``.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

STAGES = ("read", "decode", "preprocess", "model", "postprocess", "encode")


class StageClock:
    """Milliseconds per stage since the last ``take``."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(STAGES, 0.0)
        self._current: str | None = None
        self._since = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Charge the time inside the block to ``name`` (and not to the stage around it)."""
        outer = self._switch(name)
        try:
            yield
        finally:
            self._switch(outer)

    def take(self) -> dict[str, float]:
        """The totals so far, in ms, and a fresh start."""
        totals, self.totals = self.totals, dict.fromkeys(STAGES, 0.0)
        return totals

    def so_far(self) -> dict[str, float]:
        """The totals so far, in ms, the running stage's time included, without a fresh start."""
        totals = dict(self.totals)
        if self._current is not None:
            totals[self._current] += (time.perf_counter() - self._since) * 1000
        return totals

    def _switch(self, name: str | None) -> str | None:
        now = time.perf_counter()
        previous = self._current
        if previous is not None:
            self.totals[previous] += (now - self._since) * 1000
        self._current, self._since = name, now
        return previous


CLOCK = StageClock()


def server_timing(totals: dict[str, float]) -> str:
    """Stage times as an HTTP ``Server-Timing`` value (``decode;dur=3.21, model;dur=40.5``), which browsers show
    beside the request's own timing; stages that took no time are left out."""
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in totals.items() if ms > 0)
