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
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import CalibrationDataError

LABELS_KEY = "labels"

Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = ",".join(str(d) if d is not None else "?" for d in self.shape)
        return f"{self.dtype}[{dims}]"


def model_input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs a feed must provide (initializers listed as inputs are optional)."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            # A non-positive dim_value (Paddle exports declare the batch as -1) is dynamic.
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        specs.append(InputSpec(value.name, dtype, tuple(dims)))
    return specs


@dataclass(frozen=True)
class Chunk:
    """One file's worth of samples; loaded only when iterated."""

    source: str
    load: Callable[[], dict[str, np.ndarray]]
    count: int
    # True: axis 0 enumerates complete feeds (one per sample); False: axis 0 is the batch axis.
    stacked: bool
    has_labels: bool


@dataclass(frozen=True)
class Batch:
    feed: dict[str, np.ndarray]
    labels: np.ndarray | None
    count: int


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
        rows; stacked feeds run one by one. Only one chunk is in memory at a time.
        """
        fixed_batch = [s.shape[0] for s in self.specs if s.shape and isinstance(s.shape[0], int)]
        if fixed_batch:
            batch_size = min(int(v) for v in fixed_batch if isinstance(v, int))
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
                    yield _concat(pending)
                    pending, pending_rows, pending_key = [], 0, None
                for row in rows:
                    # np.asarray: a rank-0 input (a sample rate, a flag) indexes to a scalar.
                    feed = {name: np.asarray(arrays[name][row]) for name in arrays}
                    _check_finite(feed, chunk.source, int(row))
                    yield Batch(feed, None if labels is None else labels[row : row + 1], 1)
                continue
            key = tuple((n, a.shape[1:]) for n, a in sorted(arrays.items()))
            for start in range(0, rows.size, batch_size):
                part = rows[start : start + batch_size]
                if pending_key is not None and (
                    key != pending_key or pending_rows + part.size > batch_size
                ):
                    yield _concat(pending)
                    pending, pending_rows = [], 0
                feed = {name: np.asarray(a[part]) for name, a in arrays.items()}
                _check_finite(feed, chunk.source, int(part[0]))
                pending.append((feed, None if labels is None else np.asarray(labels[part])))
                pending_rows += part.size
                pending_key = key
        if pending:
            yield _concat(pending)


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


def _check_finite(feed: dict[str, np.ndarray], source: str, first_row: int) -> None:
    for name, array in feed.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise CalibrationDataError(
                f"{source}: input {name!r} contains NaN or inf (in samples from {first_row})"
            )


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


def _directory_chunks(path: Path, specs: list[InputSpec], allow_labels: bool) -> list[Chunk]:
    try:
        entries = sorted(path.iterdir())
    except OSError as err:
        raise CalibrationDataError(f"cannot read calibration directory {path}: {err}") from err
    test_sets = [e for e in entries if e.is_dir() and e.name.startswith("test_data_set")]
    if test_sets:
        return [_test_data_set_chunk(d, specs) for d in test_sets]
    if list(path.glob("input_*.pb")):
        return [_test_data_set_chunk(path, specs)]
    npz_files = [e for e in entries if e.suffix == ".npz" and e.is_file()]
    if npz_files:
        return [_file_chunk(f, specs, allow_labels) for f in npz_files]
    npy_files = {e.stem: e for e in entries if e.suffix == ".npy" and e.is_file()}
    if npy_files:
        headers = {name: _npy_header(f) for name, f in npy_files.items()}
        count, stacked = _check_arrays(str(path), headers, specs, allow_labels)

        def load() -> dict[str, np.ndarray]:
            return {name: _read_npy(f, mmap=True) for name, f in npy_files.items()}

        return [Chunk(str(path), load, count, stacked, LABELS_KEY in headers)]
    raise CalibrationDataError(
        f"no calibration data in {path}: expected .npz files, <input>.npy files "
        "or test_data_set_* directories"
    )


def _file_chunk(path: Path, specs: list[InputSpec], allow_labels: bool) -> Chunk:
    if path.suffix == ".npz":
        headers = _npz_headers(path)

        def load() -> dict[str, np.ndarray]:
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {key: data[key] for key in data.files}
            except (OSError, ValueError, zipfile.BadZipFile) as err:
                raise CalibrationDataError(f"cannot read {path}: {err}") from err

    elif path.suffix == ".npy":
        if len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise CalibrationDataError(
                f"{path} is a single .npy array but the model has {len(specs)} inputs ({names}); "
                "use an .npz keyed by input name"
            )
        headers = {specs[0].name: _npy_header(path)}

        def load() -> dict[str, np.ndarray]:
            return {specs[0].name: _read_npy(path, mmap=True)}

    else:
        raise CalibrationDataError(
            f"unsupported calibration file {path.name}: expected .npz, .npy, a directory of "
            "them, or test_data_set_* directories"
        )
    count, stacked = _check_arrays(str(path), headers, specs, allow_labels)
    return Chunk(str(path), load, count, stacked, LABELS_KEY in headers)


def _test_data_set_chunk(directory: Path, specs: list[InputSpec]) -> Chunk:
    """One ``test_data_set_*`` directory is one feed: for inputs whose first axis is dynamic
    (a batch axis), its tensors hold that many samples along axis 0, as .npy / .npz arrays
    do; otherwise (fixed first axis or no batch axis) it is one sample."""
    files = sorted(directory.glob("input_*.pb"), key=lambda p: _pb_index(p))
    if not files:
        raise CalibrationDataError(f"{directory} holds no input_*.pb files")
    arrays: dict[str, np.ndarray] = {}
    for k, pb_file in enumerate(files):
        tensor = onnx.TensorProto()
        try:
            tensor.ParseFromString(pb_file.read_bytes())
            array = numpy_helper.to_array(tensor)
        except Exception as err:  # protobuf raises several unrelated types on bad bytes
            raise CalibrationDataError(f"{pb_file} is not a valid TensorProto") from err
        by_name = {s.name for s in specs}
        if tensor.name and tensor.name in by_name:
            name = tensor.name
        elif k < len(specs):
            name = specs[k].name
        else:
            raise CalibrationDataError(f"{pb_file}: the model has only {len(specs)} inputs")
        arrays[name] = array[np.newaxis]  # one complete feed, stacked
    by_spec = {s.name: s for s in specs}
    if arrays and all(
        name in by_spec
        and by_spec[name].rank > 0
        and not isinstance(by_spec[name].shape[0], int)
        and array.ndim == by_spec[name].rank + 1
        for name, array in arrays.items()
    ):
        # A dynamic batch axis: the samples are along it (4 sets of 64 images: 256 samples).
        arrays = {name: array[0] for name, array in arrays.items()}
    headers = {name: (a.shape, a.dtype) for name, a in arrays.items()}
    count, stacked = _check_arrays(str(directory), headers, specs, allow_labels=False)
    return Chunk(str(directory), lambda: dict(arrays), count, stacked, False)


def _pb_index(path: Path) -> int:
    try:
        return int(path.stem.split("_")[-1])
    except ValueError:
        return 0


def _check_arrays(
    source: str,
    headers: dict[str, tuple[tuple[int, ...], np.dtype]],
    specs: list[InputSpec],
    allow_labels: bool,
) -> tuple[int, bool]:
    """Validate names, dtypes and shapes; return (sample count, stacked?)."""
    expected = {s.name for s in specs}
    given = set(headers)
    if allow_labels:
        given.discard(LABELS_KEY)
    missing = sorted(expected - given)
    extra = sorted(given - expected)
    if missing:
        raise CalibrationDataError(
            f"{source}: missing model input(s) {', '.join(missing)}"
            + (f" (found {', '.join(sorted(given))})" if given else "")
        )
    if extra:
        hint = " (labels are only read from --eval data)" if LABELS_KEY in extra else ""
        raise CalibrationDataError(
            f"{source}: array(s) {', '.join(extra)} match no model input{hint}; "
            f"the model's inputs are {', '.join(sorted(expected))}"
        )
    counts: set[int] = set()
    modes: set[bool] = set()
    for spec in specs:
        shape, dtype = headers[spec.name]
        if dtype != spec.dtype:
            raise CalibrationDataError(
                f"{source}: input {spec.name!r} has dtype {dtype}, the model expects {spec.dtype}"
            )
        if len(shape) == spec.rank:
            stacked, per_sample = False, shape
            if spec.rank == 0:
                raise CalibrationDataError(
                    f"{source}: input {spec.name!r} is a scalar; give a stack of samples "
                    "(one more axis)"
                )
        elif len(shape) == spec.rank + 1:
            stacked, per_sample = True, shape[1:]
        else:
            raise CalibrationDataError(
                f"{source}: input {spec.name!r} has shape {list(shape)}, the model expects "
                f"{spec.describe()} (or a stack of such feeds)"
            )
        dims = per_sample if stacked else per_sample[1:]
        model_dims = spec.shape if stacked else spec.shape[1:]
        for got, want in zip(dims, model_dims, strict=True):
            if isinstance(want, int) and got != want:
                raise CalibrationDataError(
                    f"{source}: input {spec.name!r} has shape {list(shape)}, the model expects "
                    f"{spec.describe()}"
                )
        counts.add(shape[0])
        modes.add(stacked)
    if len(modes) > 1:
        raise CalibrationDataError(
            f"{source}: mix of batched and stacked arrays; give every input either with the "
            "model's rank (a batch) or with one more axis (a stack of feeds)"
        )
    if len(counts) > 1:
        raise CalibrationDataError(
            f"{source}: inputs disagree on the number of samples along axis 0: {sorted(counts)}"
        )
    count = counts.pop() if counts else 0
    if allow_labels and LABELS_KEY in headers:
        label_shape, label_dtype = headers[LABELS_KEY]
        if not label_shape or label_shape[0] != count or not np.issubdtype(label_dtype, np.integer):
            raise CalibrationDataError(
                f"{source}: 'labels' must be integer class indices with {count} entries, "
                f"got {label_dtype}{list(label_shape)}"
            )
    return count, modes.pop() if modes else False


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    try:
        archive_bytes = path.stat().st_size
        with zipfile.ZipFile(path) as archive:
            headers = {}
            for info in archive.infolist():
                member = info.filename
                if not member.endswith(".npy"):
                    continue
                source = f"{path}:{member}"
                # The member's sizes in the zip directory are claims too: a stored member is
                # as large as its bytes, deflate cannot expand more than ~1032x, and no member
                # is larger than the archive (zipfile enforces the claimed size when it reads,
                # so a checked claim bounds what a load can return).
                if info.compress_type == zipfile.ZIP_STORED:
                    expands = info.file_size != info.compress_size
                elif info.compress_type == zipfile.ZIP_DEFLATED:
                    expands = info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024
                else:  # bzip2 / lzma: no fixed bound (their claim is enforced on reading)
                    expands = False
                if expands or info.compress_size > archive_bytes:
                    raise CalibrationDataError(
                        f"{source}: the archive claims {info.file_size} bytes from "
                        f"{info.compress_size} compressed bytes; the file is corrupt"
                    )
                with archive.open(info) as handle:
                    shape, dtype = _read_header(handle, source)
                    _check_data_size(shape, dtype, info.file_size - handle.tell(), source)
                headers[member[: -len(".npy")]] = (shape, dtype)
            return headers
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise CalibrationDataError(f"cannot read {path}: not a valid .npz file") from err


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with path.open("rb") as handle:
            shape, dtype = _read_header(handle, str(path))
            _check_data_size(shape, dtype, path.stat().st_size - handle.tell(), str(path))
            return shape, dtype
    except OSError as err:
        raise CalibrationDataError(f"cannot read {path}: {err.strerror or err}") from err


# Deflate's largest possible expansion (a run of equal bytes), with a margin.
_DEFLATE_MAX_RATIO = 1100


def _check_data_size(shape: tuple[int, ...], dtype: np.dtype, available: int, source: str) -> None:
    """Refuse a header whose shape needs more bytes than the file holds, before anything is
    allocated from it (the sample count, axis 0, sizes the held-out split and the batches)."""
    needed = math.prod(shape) * dtype.itemsize
    if needed > available:
        raise CalibrationDataError(
            f"{source}: the header claims shape {list(shape)} ({needed} bytes of {dtype}) but "
            f"the file holds only {max(available, 0)} bytes of data; it is truncated or corrupt"
        )


def _read_header(handle: object, source: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)  # type: ignore[arg-type]
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)  # type: ignore[arg-type]
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)  # type: ignore[arg-type]
    except (ValueError, EOFError, OSError) as err:
        raise CalibrationDataError(f"{source} is not a valid .npy array") from err
    if dtype.hasobject:
        raise CalibrationDataError(f"{source} holds Python objects, expected a numeric array")
    return tuple(shape), dtype


def _read_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise CalibrationDataError(f"cannot read {path}: {err}") from err
