"""The report's gzip size (chunked, parallel, sampled above 32 MiB) and sessions built in memory."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from onnxprune import io
from onnxprune import session as session_module


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


def test_gzip_size_computed_in_the_background_is_the_same(tmp_path: Path) -> None:
    """``gzip_size_later`` answers what ``gzip_size_bytes`` does, when asked; a file that
    cannot be read fails at the asking, as the direct call does."""
    path = tmp_path / "model.bin"
    path.write_bytes(np.random.default_rng(2).standard_normal(500_000).tobytes())
    io._gzip_chunks.clear()
    direct = io.gzip_size_bytes(path)
    io._gzip_chunks.clear()  # compressed afresh in the background, not read from the cache
    assert io.gzip_size_later(path)() == direct
    missing = io.gzip_size_later(tmp_path / "gone" / "model.bin")
    with pytest.raises(FileNotFoundError):
        missing()


def test_a_session_built_in_memory_runs_like_one_from_the_file(tmp_path: Path) -> None:
    """``session_in_memory`` hands large initializers to onnxruntime as arrays: same outputs
    as the model saved and loaded, nothing written, and the arrays outlive the caller's."""
    import gc

    import builders
    import onnx

    from onnxprune.session import make_session, session_in_memory

    model = builders.mlp_matmul(sizes=(64, 128, 128, 4), seed=3)
    moved = [t.name for t in model.graph.initializer if session_module.movable(t)]
    assert moved, "the test model has initializers large enough to be moved"
    feed = {name: value[:8] for name, value in builders.random_inputs(model, 8, seed=0).items()}
    from_file = make_session(builders.save(model, tmp_path / "m.onnx"))
    in_memory = session_in_memory(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy  # the session keeps its own arrays
    gc.collect()
    for a, b in zip(from_file.run(None, feed), in_memory.run(None, feed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
