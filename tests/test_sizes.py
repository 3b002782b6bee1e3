"""The report's gzip size: chunked and parallel, close to one gzip stream of the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from onnxprune import io


def test_chunked_gzip_size_matches_one_stream(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(3_000_000).astype(np.float32)
    weights[rng.random(weights.size) < 0.6] = 0.0  # pruned zeros compress
    path = tmp_path / "model.bin"
    path.write_bytes(weights.tobytes())
    io._gzip_chunks.clear()
    chunked = io.gzip_size_bytes(path)
    one_stream = len(gzip.compress(path.read_bytes(), compresslevel=1))
    assert chunked is not None
    assert abs(chunked - one_stream) <= 0.002 * one_stream
    assert chunked < path.stat().st_size * 0.8, "the zeros are seen"
    # Unchanged chunks are not compressed again, and the answer is the same.
    cached = len(io._gzip_chunks)
    assert cached == -(-path.stat().st_size // io._GZIP_CHUNK)  # under 32 MiB: every chunk
    assert io.gzip_size_bytes(path) == chunked
    assert len(io._gzip_chunks) == cached


def test_gzip_size_of_a_large_file_is_estimated_within_two_percent(tmp_path: Path) -> None:
    """Above 32 MiB every 4th chunk is compressed and scaled: weights with pruned rows of
    different sparsity, as a pruned model has."""
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((10_000, 1_000)).astype(np.float32)
    rows[rng.random(rows.shape) < np.linspace(0.0, 0.95, rows.shape[0])[:, None]] = 0.0
    path = tmp_path / "model.bin"
    path.write_bytes(rows.tobytes())  # 40 MB
    io._gzip_chunks.clear()
    estimate = io.gzip_size_bytes(path)
    exact = len(gzip.compress(path.read_bytes(), compresslevel=1))
    assert estimate is not None
    assert abs(estimate - exact) <= 0.02 * exact
