"""Calibration / evaluation data sources, checked against the model's inputs.

Accepted layouts (see README "Calibration data"):
- ``data.npz``: arrays keyed by input name;
- a directory of ``.npz`` files (each a chunk, read one at a time, in name order);
- a directory of ``<input_name>.npy`` files (memory-mapped);
- ``test_data_set_*`` directories of ``input_k.pb`` (a directory of them, or one of them);
- a single ``.npy`` file for a model with one input.

An array with the input's rank is a batch along axis 0; an array with one more axis is a stack of
complete feeds, one per sample (for inputs with no batch axis). Evaluation data may carry a
``labels`` array (class index per sample).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import CalibrationDataError
from .arrays import _check_arrays
from .files import _directory_chunks, _file_chunk
from .records import LABELS_KEY, Batch, Chunk, InputSpec, model_input_specs

__all__ = [
    "LABELS_KEY",
    "Batch",
    "CalibrationSet",
    "Chunk",
    "DataSource",
    "InputSpec",
    "model_input_specs",
    "open_data",
]


class CalibrationSet:
    """An ordered list of chunks; samples are numbered 0..total-1 across chunks.

    File chunks load themselves; a generator source (``stream``) yields the chunks' arrays in
    order, once per pass.
    """

    def __init__(
        self,
        name: str,
        specs: list[InputSpec],
        chunks: list[Chunk],
        stream: Callable[[], Iterator[dict[str, np.ndarray]]] | None = None,
    ) -> None:
        self.name = name
        self.specs = specs
        self.chunks = chunks
        self.stream = stream
        self.total = sum(c.count for c in chunks)

    def _chunk_arrays(self) -> Iterator[tuple[Chunk, Callable[[], dict[str, np.ndarray]]]]:
        if self.stream is None:
            for chunk in self.chunks:
                yield chunk, chunk.load
            return
        items = self.stream()
        for chunk in self.chunks:
            item = next(items, None)
            if item is None:
                raise CalibrationDataError(
                    f"{self.name} yielded fewer batches on a later pass than on the first"
                )
            arrays = {name: np.asarray(value) for name, value in item.items()}
            yield chunk, functools.partial(dict, arrays)

    @property
    def has_labels(self) -> bool:
        return bool(self.chunks) and all(c.has_labels for c in self.chunks)

    def batches(self, selected: np.ndarray, batch_size: int) -> Iterator[Batch]:
        """Yield feeds for the samples where ``selected`` (bool, [total]) is True, in order.

        Consecutive batched chunks with equal per-sample shapes are merged up to ``batch_size``
        rows; stacked feeds run one by one. Only one chunk is in memory at a time. A model whose
        batch axis is fixed runs batches of exactly that size: a shorter one is filled by
        repeating its own rows (``Batch.padded``; ``Batch.samples_of`` drops their outputs).
        """
        fixed = self.fixed_batch
        if fixed is not None:
            batch_size = fixed
        yield from self._batches(selected, batch_size, fixed or 0)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model's inputs fix (the smallest, if they disagree), or None
        when their batch axis is free."""
        fixed = [s.shape[0] for s in self.specs if s.shape and isinstance(s.shape[0], int)]
        return min(int(v) for v in fixed if isinstance(v, int)) if fixed else None

    def _batches(self, selected: np.ndarray, batch_size: int, fill: int) -> Iterator[Batch]:
        pending: list[tuple[dict[str, np.ndarray], np.ndarray | None]] = []
        pending_rows = 0
        pending_key: tuple[object, ...] | None = None
        offset = 0
        for chunk, load in self._chunk_arrays():
            rows = np.flatnonzero(selected[offset : offset + chunk.count])
            offset += chunk.count
            if rows.size == 0:
                continue
            arrays = load()
            labels = arrays.pop(LABELS_KEY, None)
            if chunk.stacked:
                if pending:
                    yield _filled(_concat(pending), fill)
                    pending, pending_rows, pending_key = [], 0, None
                for row in rows:
                    # np.asarray: a rank-0 input (a sample rate, a flag) indexes to a scalar.
                    feed = {name: np.asarray(arrays[name][row]) for name in arrays}
                    _check_finite(feed, chunk.source, np.array([row]), batched=False)
                    yield Batch(feed, None if labels is None else labels[row : row + 1], 1)
                continue
            key = tuple((n, a.shape[1:]) for n, a in sorted(arrays.items()))
            for start in range(0, rows.size, batch_size):
                part = rows[start : start + batch_size]
                if pending_key is not None and (
                    key != pending_key or pending_rows + part.size > batch_size
                ):
                    yield _filled(_concat(pending), fill)
                    pending, pending_rows = [], 0
                # Consecutive rows as a view (of a memory-mapped file: no copy); others copied.
                index = _as_slice(part)
                feed = {name: np.asarray(a[index]) for name, a in arrays.items()}
                _check_finite(feed, chunk.source, part, batched=True)
                pending.append((feed, None if labels is None else np.asarray(labels[index])))
                pending_rows += part.size
                pending_key = key
        if pending:
            yield _filled(_concat(pending), fill)


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    """``rows`` (ascending indices) as a slice when they are consecutive."""
    first, last = int(rows[0]), int(rows[-1])
    return slice(first, last + 1) if last - first + 1 == rows.size else rows


def _concat(parts: list[tuple[dict[str, np.ndarray], np.ndarray | None]]) -> Batch:
    if len(parts) == 1:
        feed, labels = parts[0]
    else:
        feed = {name: np.concatenate([p[0][name] for p in parts]) for name in parts[0][0]}
        label_parts = [p[1] for p in parts]
        labels = (
            None if any(lbl is None for lbl in label_parts) else np.concatenate(label_parts)  # type: ignore[arg-type]
        )
    count = next(iter(feed.values())).shape[0] if feed else 0
    return Batch(feed, labels, count)


def _filled(batch: Batch, size: int) -> Batch:
    """``batch`` (batch-first inputs) filled to ``size`` rows by repeating its rows in order;
    as it is when it has that many (or ``size`` is 0)."""
    if batch.count >= size or batch.count == 0:
        return batch
    repeat = np.arange(size) % batch.count
    feed = {
        name: value[repeat] if value.ndim and value.shape[0] == batch.count else value
        for name, value in batch.feed.items()
    }
    return Batch(feed, batch.labels, batch.count, padded=size - batch.count)


def _check_finite(
    feed: dict[str, np.ndarray], source: str, rows: np.ndarray, batched: bool
) -> None:
    """Refuse NaN or inf in a float input, naming the first sample that holds one: ``rows``
    numbers ``feed``'s samples within ``source`` (along axis 0 when ``batched``, else the one
    stacked sample ``rows[0]``)."""
    for name, array in feed.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            row = int(rows[0])
            if batched and array.ndim:
                finite = np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
                row = int(rows[int(np.argmin(finite))])
            value = "NaN" if np.isnan(array).any() else "inf"
            raise CalibrationDataError(f"{source}: input {name!r} contains {value} (sample {row})")


# ---------------------------------------------------------------------------------------------
# Opening a path


# A path, a zero-argument callable returning a fresh iterator of feed dicts (streamed, one
# pass per use), or an iterable of feed dicts (kept in memory).
DataSource = (
    str | Path | Callable[[], Iterable[dict[str, np.ndarray]]] | Iterable[dict[str, np.ndarray]]
)


def open_data(
    source: DataSource, specs: list[InputSpec], *, allow_labels: bool = False
) -> CalibrationSet:
    """Index a data source; check names, dtypes and shapes (from headers for files)."""
    if isinstance(source, (str, Path)):
        return _open_path(Path(source), specs, allow_labels)
    if callable(source):
        factory = source
    else:
        items = [dict(item) for item in source]
        factory = lambda: iter(items)  # noqa: E731
    return _open_stream(factory, specs, allow_labels)


def _open_stream(
    factory: Callable[[], Iterable[dict[str, np.ndarray]]],
    specs: list[InputSpec],
    allow_labels: bool,
) -> CalibrationSet:
    """A Python data source: each yielded dict is one chunk (a batch, or a stack of feeds)."""
    chunks = []
    for index, item in enumerate(factory()):
        if not isinstance(item, dict):
            raise CalibrationDataError(
                f"calibration generator item {index} is a {type(item).__name__}, expected a "
                "dict of arrays keyed by input name"
            )
        arrays = {name: np.asarray(value) for name, value in item.items()}
        source = f"calibration generator item {index}"
        headers = {name: (a.shape, a.dtype) for name, a in arrays.items()}
        count, stacked = _check_arrays(source, headers, specs, allow_labels)
        # The data is not kept: each pass asks the factory again (CalibrationSet.stream).
        chunks.append(Chunk(source, _streamed, count, stacked, LABELS_KEY in arrays))
    dataset = CalibrationSet("calibration generator", specs, chunks, stream=lambda: iter(factory()))
    if dataset.total == 0:
        raise CalibrationDataError("the calibration generator yielded zero samples")
    return dataset


def _streamed() -> dict[str, np.ndarray]:
    raise AssertionError("streamed chunks are read through CalibrationSet.stream")


def _open_path(path: Path, specs: list[InputSpec], allow_labels: bool) -> CalibrationSet:
    if not path.exists():
        raise CalibrationDataError(f"calibration data not found: {path}")
    if path.is_file():
        chunks = [_file_chunk(path, specs, allow_labels)]
    else:
        chunks = _directory_chunks(path, specs, allow_labels)
    dataset = CalibrationSet(str(path), specs, chunks)
    if dataset.total == 0:
        raise CalibrationDataError(f"calibration data at {path} holds zero samples")
    return dataset
