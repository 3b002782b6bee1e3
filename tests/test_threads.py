"""Per-layer work on two threads (``threads.map_layers``): the serial loop's results, large
items alone, numpy's BLAS at one thread in every worker."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import builders
import numpy as np
import pytest
from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

from onnxprune import threads
from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner


def _blas_threads() -> list[int]:
    return [int(pool["num_threads"]) for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_results_keep_item_order_and_large_items_run_alone() -> None:
    lock = threading.Lock()
    running: list[int] = []
    seen_with: dict[int, set[int]] = {}

    def work(item: int) -> int:
        with lock:
            running.append(item)
            for other in running:
                seen_with.setdefault(other, set()).update(running)
        time.sleep(0.02)
        with lock:
            running.remove(item)
        return item * item

    sizes = {0: 10, 1: threads.PAIR_BYTES, 2: 10, 3: 10, 4: threads.PAIR_BYTES // 2 + 1, 5: 10}
    items = list(sizes)
    results = threads.map_layers(work, items, cost=float, size=sizes.__getitem__)
    assert results == [k * k for k in items]
    for large in (1, 4):
        assert seen_with[large] == {large}, "an item over half of PAIR_BYTES ran beside another"
    if (os.cpu_count() or 1) >= 2:
        small_overlaps = [seen_with[k] - {k} for k in (0, 2, 3, 5)]
        assert any(small_overlaps), "the small items never ran two at a time"


def test_an_error_in_a_worker_reaches_the_caller() -> None:
    def work(item: int) -> int:
        if item == 2:
            raise ValueError("layer 2")
        return item

    with pytest.raises(ValueError, match="layer 2"):
        threads.map_layers(work, [0, 1, 2, 3], cost=float, size=lambda item: 0)


def test_workers_compute_on_one_blas_thread_and_the_limit_is_restored() -> None:
    """A product large enough for OpenBLAS to split rounds differently on one thread than on
    two: inside ``map_layers`` every worker's result is the one-thread result."""
    before = _blas_threads()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 1024))
    hessian = x.T @ x + np.eye(1024)
    with threads.one_blas_thread():
        assert all(count == 1 for count in _blas_threads())
        one_thread = np.linalg.cholesky(hessian)
    got = threads.map_layers(
        lambda _: np.linalg.cholesky(hessian), [0, 1, 2], cost=float, size=lambda _: 0
    )
    assert all(np.array_equal(factor, one_thread) for factor in got)
    assert _blas_threads() == before


def _pruned(tmp_path: Path, workers: int) -> bytes:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(threads, "LAYER_WORKERS", workers)
        model = builders.mlp_matmul((16, 48, 48, 32, 4), seed=7)
        tmp_path.mkdir()
        path = builders.save(model, tmp_path / "model.onnx")
        inputs = builders.random_inputs(model, 96, seed=2)
        calib = builders.write_npz(tmp_path / "calib.npz", inputs)
        candidate = Pruner(path, calib, PruneConfig(sparsity=0.6)).build()
        return candidate.model.SerializeToString()


def test_factors_made_two_at_a_time_write_the_same_model(tmp_path: Path) -> None:
    assert _pruned(tmp_path / "two", 2) == _pruned(tmp_path / "one", 1)
