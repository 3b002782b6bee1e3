"""How big a model is on disk: its files, their gzip size, its serialised size."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError


def external_data_files(model_path: Path) -> list[Path]:
    """The external data files a model on disk refers to (without loading their contents)."""
    # External data lies beside the real file when the model path is a symbolic link.
    model_path = model_path.resolve()
    try:
        status = model_path.stat()
    except OSError:
        return []
    # A run asks this of the same files many times; each answer parses the whole proto.
    key = (str(model_path), status.st_mtime_ns, status.st_size, status.st_ino)
    if key not in _external_data_cache:
        if len(_external_data_cache) >= 64:
            _external_data_cache.clear()
        _external_data_cache[key] = _read_external_data_files(model_path)
    return list(_external_data_cache[key])


_external_data_cache: dict[tuple[str, int, int, int], list[Path]] = {}


def _read_external_data_files(model_path: Path) -> list[Path]:
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (OSError, DecodeError, ValueError):
        return []
    names = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location":
                    names.add(entry.value)
    return [model_path.parent / name for name in sorted(names)]


def model_size_bytes(model_path: Path) -> int:
    """Size of the model file plus every external data file it refers to."""
    files = [model_path, *external_data_files(model_path)]
    return sum(f.stat().st_size for f in files if f.exists())


# Above this, the compressed size is not computed (it would cost seconds per 100 MB).
_GZIP_LIMIT = 512 * 1024 * 1024
# The gzip size is summed over independently compressed chunks of this size: they compress
# in parallel, and a chunk the output shares with the input (unchanged tensors) is not
# compressed twice. Deflate's window is 32 KiB, so the sum is within a few bytes per chunk of
# one stream's size.
_GZIP_CHUNK = 1024 * 1024
# Above this many bytes, one chunk in _GZIP_SAMPLE_STRIDE is compressed and the sum scaled
# to the whole (compressing 90 MB of weights costs about 1 s per core): within 2% (tested;
# 1% on MiniLM's 90 MB), at a quarter of the cost.
_GZIP_EXACT_BYTES = 32 * 1024 * 1024
_GZIP_SAMPLE_STRIDE = 4
# Compressed size by chunk digest, for the process (a run sizes its input and its output).
_gzip_chunks: dict[bytes, int] = {}
_GZIP_CACHE_ENTRIES = 4096


def _gzip_chunk_size(block: bytes) -> int:
    key = hashlib.blake2b(block, digest_size=16).digest()
    size = _gzip_chunks.get(key)
    if size is None:
        # Level 1: a few times faster than the default 6 on weights, within a few % of its size.
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip container
        size = len(compressor.compress(block)) + len(compressor.flush())
        if len(_gzip_chunks) >= _GZIP_CACHE_ENTRIES:
            _gzip_chunks.clear()
        _gzip_chunks[key] = size
    return size


def gzip_size_bytes(model_path: Path) -> int | None:
    """Size of the model (and its external data) after gzip -1, in 1 MiB chunks (see
    ``_GZIP_CHUNK``; estimated from one chunk in 4 above 32 MiB): what zeroed weights save
    in a compressed artifact or download. None for very large models."""
    files = [model_path, *external_data_files(model_path)]
    total_bytes = sum(f.stat().st_size for f in files if f.exists())
    if total_bytes > _GZIP_LIMIT:
        return None
    stride = 1 if total_bytes <= _GZIP_EXACT_BYTES else _GZIP_SAMPLE_STRIDE
    workers = max(1, min(4, os.cpu_count() or 1))
    compressed = sampled = 0
    # zlib and blake2b release the GIL: chunks compress on every core; at most 2 chunks per
    # worker are read ahead.
    with ThreadPoolExecutor(workers) as pool:
        pending: list[Future[int]] = []
        for file in files:
            with file.open("rb") as handle:
                for number in itertools.count():
                    block = handle.read(_GZIP_CHUNK)
                    if not block:
                        break
                    if number % stride != stride // 2:
                        continue
                    sampled += len(block)
                    pending.append(pool.submit(_gzip_chunk_size, block))
                    if len(pending) >= 2 * workers:
                        compressed += pending.pop(0).result()
        compressed += sum(f.result() for f in pending)
    if sampled == 0:
        return 0
    return round(compressed * total_bytes / sampled)


def gzip_size_later(model_path: Path) -> Callable[[], int | None]:
    """``gzip_size_bytes(model_path)``, started now in a background thread at the lowest CPU
    priority: the returned function waits for it. On Linux the thread (and the compressing
    threads it starts, which inherit its nice value) takes only what the run leaves idle;
    planning keeps about 1.25 of 2 cores busy (EfficientNet-Lite0), so the input model's
    size, which the report shows at the end, no longer costs the run 0.3-0.4 s of
    compressing before calibration. Elsewhere it runs at normal priority, still beside the
    run."""
    result: Future[int | None] = Future()

    def compress() -> None:
        with contextlib.suppress(AttributeError, OSError):  # no per-thread nice value here
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            result.set_result(gzip_size_bytes(model_path))
        except Exception as err:  # handed to the caller, who sees it when asking
            result.set_exception(err)

    # A daemon: a run that fails before asking does not wait for it at exit.
    threading.Thread(target=compress, name="onnxprune-gzip-size", daemon=True).start()
    return result.result


def proto_size_bytes(model: onnx.ModelProto) -> int:
    """The serialised size, summed part by part: ``ModelProto.ByteSize()`` itself fails above
    protobuf's 2 GB limit, which is exactly when the answer matters."""
    graph = model.graph
    parts = [*graph.initializer, *graph.node, *graph.sparse_initializer]
    return sum(part.ByteSize() for part in parts)
