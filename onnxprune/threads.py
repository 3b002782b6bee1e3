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

``threadpoolctl`` (a dependency) does the limiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

_controller: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block, numpy's BLAS runs on one thread (restored after)."""
    global _controller
    if _controller is None:
        # Built once: it scans the loaded libraries (about 0.1 s).
        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        yield
