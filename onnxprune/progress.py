"""One progress display for a whole run: a single terminal line whose phase name changes.

Each phase (calibration, judging candidates, sensitivity, ...) restarts the same bar with its
own total, unit and ETA, so a run shows one line, not a stack of bars. Disabled (nothing is
drawn) under ``-q`` and when stderr is not a terminal; the CLI decides, the library only draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

# A phase's ``advance(count=1)``.
Advance = Callable[..., object]


class Progress:
    """``with progress.phase("calibrating", total, "sample") as advance: advance(n)``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None

    @contextmanager
    def phase(self, name: str, total: int, unit: str) -> Iterator[Advance]:
        if not self.enabled:
            yield _ignore
            return
        if self._bar is None:
            self._bar = tqdm(total=total, desc=name, unit=unit, leave=False, dynamic_ncols=True)
        else:
            self._bar.unit = unit
            self._bar.set_description(name, refresh=False)
            self._bar.reset(total=total)  # redraws, with the new phase's name
        bar = self._bar
        yield lambda count=1: bar.update(count)
        bar.refresh()  # the phase's final count, whatever the redraw interval skipped

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _ignore(count: int = 1) -> None:
    """A disabled phase's ``advance``."""


def as_progress(progress: bool | Progress) -> Progress:
    return progress if isinstance(progress, Progress) else Progress(progress)
