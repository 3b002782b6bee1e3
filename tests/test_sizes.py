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
    assert cached == -(-path.stat().st_size // io._GZIP_CHUNK)
    assert io.gzip_size_bytes(path) == chunked
    assert len(io._gzip_chunks) == cached
