"""Seconds per stage of a run (``report.timings``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Timer:
    """``with timer("save"): ...`` records the block's seconds under ``"save"``; ``total()`` the
    seconds since ``started`` (``time.perf_counter()`` when the run began)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        clock = time.perf_counter()
        yield
        self.timings[stage] = time.perf_counter() - clock

    def total(self) -> dict[str, float]:
        """Every stage's seconds and the run's ``total`` so far."""
        return {**self.timings, "total": time.perf_counter() - self.started}
