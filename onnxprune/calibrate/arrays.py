"""Array files (.npz, .npy) read header first: names, dtypes and shapes checked against the
model's inputs before any data is loaded."""

from __future__ import annotations

import math
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CalibrationDataError
from .records import LABELS_KEY, InputSpec


def _check_arrays(
    source: str,
    headers: dict[str, tuple[tuple[int, ...], np.dtype]],
    specs: list[InputSpec],
    allow_labels: bool,
) -> tuple[int, bool]:
    """Validate names, dtypes and shapes; return (sample count, stacked?)."""
    _check_names(source, set(headers), specs, allow_labels)
    counts: set[int] = set()
    modes: set[bool] = set()
    for spec in specs:
        shape, dtype = headers[spec.name]
        modes.add(_check_array(source, spec, shape, dtype))
        counts.add(shape[0])
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


def _check_names(source: str, given: set[str], specs: list[InputSpec], allow_labels: bool) -> None:
    """Every model input given, and nothing else (but the labels, where they are read)."""
    expected = {s.name for s in specs}
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


def _check_array(source: str, spec: InputSpec, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether one input's array is a stack of feeds (one more axis than the model's input)
    rather than one batch; a CalibrationDataError when its dtype or shape does not fit."""
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
    return stacked


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


# A zip local file header: signature, then fixed fields up to the name and extra lengths.
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz. Members stored without compression (``np.savez``) are
    memory-mapped in place, as a .npy file is: a pass over the data reads pages from the page
    cache instead of copying the archive into fresh memory each time (a 157 MB detector set
    took 0.33 s per load, read on every pass over the samples). Compressed members are read."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[: -len(".npy")]
                mapped = _mapped_member(path, archive, info)
                if mapped is None:
                    with archive.open(info) as handle:
                        mapped = np.lib.format.read_array(handle, allow_pickle=False)
                arrays[name] = mapped
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise CalibrationDataError(f"cannot read {path}: {err}") from err
    return arrays


def _mapped_member(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo
) -> np.ndarray | None:
    """A read-only memory map of one stored .npy member, or None when it is compressed,
    encrypted or its header is not where a plain local header puts it."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    assert archive.fp is not None
    archive.fp.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(archive.fp.read(_LOCAL_HEADER.size))
    if fields[0] != _LOCAL_SIGNATURE:
        return None
    name_length, extra_length = fields[-2], fields[-1]
    member_start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    archive.fp.seek(member_start)
    version = np.lib.format.read_magic(archive.fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(archive.fp)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(archive.fp)
    if dtype.hasobject:
        return None
    data_start = archive.fp.tell()
    if data_start - member_start + math.prod(shape) * dtype.itemsize > info.file_size:
        return None  # let the reader report the truncation
    if math.prod(shape) == 0:
        return np.empty(shape, dtype)
    return np.memmap(
        path,
        dtype=dtype,
        mode="r",
        offset=data_start,
        shape=tuple(shape),
        order="F" if fortran else "C",
    )
