"""numpy's BLAS held to one thread where its calls are many and small.

The OBS column walk (``reconstruct``) alternates numpy steps on a [64, out] block with
products of a few MFLOP. OpenBLAS splits each product over every core and its threads
busy-wait between calls; on a 2-core machine shared with onnxruntime's own threads (or other
processes) that waiting took the cores the walk needed: MiniLM's OBS updates at --sparsity
0.5 took 24.9 s with two BLAS threads and 12.4 s with one, on a loaded machine, same output.
For the walk's products one thread gave byte-identical models; the inverse-Hessian factors
(Cholesky and triangular inverse) round differently on one thread than on two, which moved
written weights at float32 rounding level (fidelity unchanged to 6 decimals), and makes them
independent of the machine's core count.

``threadpoolctl`` (a dependency) does the limiting. With one BLAS thread per call, the
layers' factors are made two at a time instead (``map_layers``): the same calls, so the same
results, with both cores busy (EfficientNet-Lite0's 50 factors: 0.74-0.96 -> 0.42-0.52 s).
The walks stay one at a time: two at once saved less (0.37 -> 0.30 s per candidate; their
Python loop holds the GIL between products) and raised MiniLM's peak RSS by 7-33 MB, at the
re-allocated candidate where the run peaks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

from .heap import trim_heap

_controller: Any = None
# The one-thread section is shared: the first entry limits BLAS, the last exit restores it,
# so the workers of ``map_layers`` enter it inside the caller's as a no-op. The thread that
# enters first must leave last (``map_layers`` joins its workers inside its section): a
# limit set or restored from another thread did not hold for the main thread's calls.
_section_lock = threading.Lock()
_section_depth = 0
_limiter: Any = None

# Per-layer work (``map_layers``) runs on at most this many threads, and only for items whose
# working set is at most half of PAIR_BYTES; larger ones run alone. Two at once raise the
# peak by the second one's working set: MiniLM's peak RSS (at its budget) rose by 56-61 MB
# with its K = 1536 factors (3 x 19 MB each) made two at a time.
LAYER_WORKERS = 2
PAIR_BYTES = 64 << 20

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block, numpy's BLAS runs on one thread (restored when the last thread
    inside leaves)."""
    global _controller, _section_depth, _limiter
    with _section_lock:
        if _controller is None:
            # Built once: it scans the loaded libraries (about 0.1 s).
            _controller = ThreadpoolController()
        _section_depth += 1
        if _section_depth == 1:
            _limiter = _controller.limit(limits=1, user_api="blas")
    try:
        yield
    finally:
        with _section_lock:
            _section_depth -= 1
            if _section_depth == 0:
                _limiter.restore_original_limits()
                _limiter = None


def map_layers(
    work: Callable[[T], R],
    items: Sequence[T],
    cost: Callable[[T], float],
    size: Callable[[T], int],
) -> list[R]:
    """``[work(item) for item in items]``, numpy's BLAS on one thread throughout: items whose
    working set (``size``, bytes) exceeds half of PAIR_BYTES one at a time, then the others
    on up to LAYER_WORKERS threads, the costliest first (so that the largest do not end the
    section on one thread). Each result is the serial loop's: every BLAS call runs on one
    thread either way."""
    large = [k for k, item in enumerate(items) if 2 * size(item) > PAIR_BYTES]
    small = sorted(set(range(len(items))) - set(large), key=lambda k: -cost(items[k]))
    workers = min(LAYER_WORKERS, os.cpu_count() or 1, len(small))
    with one_blas_thread():
        done = {k: work(items[k]) for k in large}
        if workers <= 1:
            done.update((k, work(items[k])) for k in small)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="onnxprune") as pool:
                done.update(zip(small, pool.map(lambda k: work(items[k]), small), strict=True))
            # What the workers freed sits in their own malloc arenas, which the main thread
            # does not allocate from: given back now rather than held to the end of the run.
            trim_heap()
    return [done[k] for k in range(len(items))]
