"""Freed heap memory given back to the operating system (glibc's ``malloc_trim``).

numpy's larger arrays come from glibc's heap rather than from their own mappings once glibc
has raised its mmap threshold (it does so each time a large mapped block is freed, up to 32
MiB). Freed, such memory stays with the process until the top of the heap is free, which
depends on what else happens to be allocated there: MiniLM's peak RSS moved between 976 and
1135 MB with changes that only altered how many small objects a run allocated, because the
425 MB the judging stage had freed was returned to the system in one build and not in the
other. Trimming where a stage has just dropped its working set makes that deterministic.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

_trim: Callable[[int], int] | bool | None = False  # False: not looked up yet


def trim_heap() -> None:
    """Return the heap's free memory to the system; a no-op where glibc is not the allocator
    (``malloc_trim`` is glibc's)."""
    global _trim
    if _trim is False:
        _trim = None
        if sys.platform.startswith("linux"):
            _trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if callable(_trim):
        _trim(0)
