"""Loading and saving models: clear errors, external data kept, atomic writes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import logging
import os
import shutil
import signal
import tempfile
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from .errors import ModelError, OutputWriteError, UsageError

log = logging.getLogger(__name__)

# Models whose file plus external data exceed this are handled in big-model mode: tensors stay
# on disk and are read one at a time (see docs and ``Pruner``). Protobuf's own limit is 2 GiB.
BIG_MODEL_BYTES = 1_500_000_000


def is_big_model(model_path: Path) -> bool:
    return model_size_bytes(model_path) > BIG_MODEL_BYTES


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


def load_model(path: Path, external_data: bool = True) -> onnx.ModelProto:
    """Load and sanity-check a model; every failure becomes one ModelError line.

    ``external_data=False``: tensors stored outside the model file stay there (the proto only
    names their file, offset and length); read them one at a time with :func:`read_tensor`.
    """
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, expected an .onnx file: {path}")
    if not os.access(path, os.R_OK):
        raise ModelError(f"model file is not readable: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"model file is empty: {path}")
    real = path.resolve()  # a symbolic link: external data lies beside the real file
    try:
        # Lazy external data resolves against the model's own directory here, not the CWD.
        model = onnx.load(str(real), load_external_data=external_data)
    except (DecodeError, RuntimeError) as err:
        raise ModelError(f"{path} is not a valid ONNX model (protobuf parse failed)") from err
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        raise ModelError(f"cannot read {path} or its external data: {_first_line(err)}") from err
    if not model.opset_import or len(model.graph.node) == 0 or model.ir_version <= 0:
        raise ModelError(f"{path} is not a valid ONNX model (no graph, opset or IR version)")
    try:
        onnx.checker.check_model(str(real))
    except (onnx.checker.ValidationError, ValueError, OSError) as err:
        raise ModelError(f"{path} fails the ONNX checker: {_first_line(err)}") from err
    return model


def load_for_reading(path: Path) -> tuple[onnx.ModelProto, Path | None]:
    """(model, directory to read its external tensors from): a big model (see
    ``BIG_MODEL_BYTES``) is loaded without its external data, to be read one tensor at a time
    (``GraphView(model, base_dir)``); other models are loaded whole (directory None)."""
    if is_big_model(path):
        return load_model(path, external_data=False), path.resolve().parent
    return load_model(path), None


def default_output_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".pruned.onnx")


def read_files(paths: dict[str, Path]) -> dict[str, Path]:
    """Every file a run reads: ``paths`` (description -> path), a directory standing for every
    file below it."""
    files: dict[str, Path] = {}
    for name, path in paths.items():
        if path.is_dir():
            try:
                below = sorted(p for p in path.rglob("*") if p.is_file())
            except OSError:
                below = []
            files.update({f"{name} ({file})": file for file in below})
        else:
            files[name] = path
    return files


def check_model_suffix(output_path: Path) -> None:
    """Refuse an output name that onnx would save in a text format (``.json``, ``.textproto``,
    ``.onnxtxt``, ...): onnxprune writes binary protobuf models only, and says so before any
    work rather than failing at the end."""
    try:
        fmt = onnx.serialization.registry.get_format_from_file_extension(output_path.suffix)
    except (AttributeError, KeyError, ValueError):  # an older onnx without the registry
        fmt = None
    if fmt is not None and fmt != "protobuf":
        raise UsageError(
            f"output path {output_path} has the suffix of onnx's {fmt} text format; onnxprune "
            "writes binary protobuf models only: use .onnx"
        )


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file: hard links to one file share it."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def check_output_path(
    output_path: Path, protected: dict[str, Path], what: str = "output path"
) -> None:
    """Fail early when ``output_path`` is one of the run's inputs or cannot be written.

    ``protected`` names the paths that must never be written (the model, its data, other
    outputs of the same run), e.g. ``{"the input model": model_path}``. Paths are compared by
    real path (symbolic links resolved) and, for existing files, by inode (hard links).
    """
    target = output_path.resolve()
    identity = _identity(output_path)
    for name, path in protected.items():
        if target == path.resolve() or (identity is not None and identity == _identity(path)):
            raise UsageError(f"{what} is {name}, refusing to overwrite it: {output_path}")
    if output_path.is_dir():
        raise UsageError(f"{what} is a directory: {output_path}")
    parent = output_path.parent if str(output_path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputWriteError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise OutputWriteError(f"output directory is not writable: {parent}")


# errno values that can only mean the output could not be written.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


# Signals whose handlers raise (Ctrl-C, and SIGTERM / SIGHUP under the CLI).
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT / SIGTERM / SIGHUP until the block ends, so that creating or removing a
    temporary directory is never cut in half; a signal that came meanwhile is handled (raises)
    as the block ends.

    Held in Python, not with ``pthread_sigmask``: a mask covers only the calling thread, and
    once onnxruntime's (or the gzip sizing's) worker threads exist the kernel may deliver the
    signal to one of them, after which CPython still runs the handler in the main thread,
    inside the block (a SIGTERM during ``mkdtemp`` then left the new staging directory behind).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    previous: dict[signal.Signals, Any] = {}
    try:
        for stop_signal in _STOP_SIGNALS:
            previous[stop_signal] = signal.signal(stop_signal, hold)
        yield
    finally:
        for stop_signal, handler in previous.items():
            # A handler installed inside the block (the CLI's own) stays. None: a handler not
            # installed from Python; the default action stands in for it.
            if signal.getsignal(stop_signal) is hold:
                signal.signal(stop_signal, signal.SIG_DFL if handler is None else handler)
        if pending:
            # Whatever handles the signal now handles what was held.
            _deliver(pending[0], signal.getsignal(pending[0]))


def _deliver(signum: int, handler: Any) -> None:
    """What ``handler`` would have done with ``signum`` had it not been held."""
    if callable(handler):
        handler(signum, None)
    elif handler in (signal.SIG_DFL, None):
        signal.raise_signal(signum)  # the default action, with the handler now restored


@contextlib.contextmanager
def staging_dir(output_path: Path) -> Iterator[Path]:
    """A temporary directory beside the output, removed whatever happens.

    Beside the output (same filesystem) so that publishing is an atomic rename. An OSError
    while it is open that concerns a file inside it, or that can only come from writing (disk
    full, quota, read-only filesystem), becomes an OutputWriteError (exit 4).
    """
    parent = output_path.parent if str(output_path.parent) else Path(".")
    tmp: Path | None = None
    try:
        try:
            with deferred_signals():  # a signal raises once ``tmp`` is set
                tmp = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=parent))
        except OSError as err:
            raise OutputWriteError(f"cannot write to {parent}: {_first_line(err)}") from err
        with write_errors(tmp, parent):
            yield tmp
    finally:
        if tmp is not None:
            with deferred_signals():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def write_errors(directory: Path, shown: Path | None = None) -> Iterator[None]:
    """An OSError about a file inside ``directory``, or one that can only come from writing
    (disk full, quota, read-only filesystem), becomes an OutputWriteError naming ``shown``."""
    try:
        yield
    except OSError as err:
        inside = err.filename is not None and Path(str(err.filename)).parent == directory
        if inside or err.errno in _WRITE_ERRNOS:
            where = shown if shown is not None else directory
            raise OutputWriteError(f"cannot write to {where}: {_first_line(err)}") from err
        raise


def proto_size_bytes(model: onnx.ModelProto) -> int:
    """The serialised size, summed part by part: ``ModelProto.ByteSize()`` itself fails above
    protobuf's 2 GB limit, which is exactly when the answer matters."""
    graph = model.graph
    parts = [*graph.initializer, *graph.node, *graph.sparse_initializer]
    return sum(part.ByteSize() for part in parts)


def write_model(model: onnx.ModelProto, path: Path, external_data: bool) -> None:
    """Write ``model`` to ``path`` (inside a staging directory), with external data if asked."""
    try:
        if external_data:
            onnx.save_model(
                model,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=path.name + ".data",
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, str(path))
    except OSError as err:
        raise OutputWriteError(f"cannot write {path.name}: {_first_line(err)}") from err


def read_tensor(tensor: onnx.TensorProto, base_dir: Path | None) -> np.ndarray:
    """A tensor's value; external data is read from ``base_dir`` (the tensor is unchanged).

    Read here rather than with onnx's helper, which refuses hard-linked files (big-model mode
    links the original data into its work directory).
    """
    if not uses_external_data(tensor):
        return numpy_helper.to_array(tensor)
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if (
        base_dir is None
        or not location
        or Path(location).is_absolute()
        or ".." in Path(location).parts
    ):
        raise ModelError(f"tensor {tensor.name} has unusable external data ({location!r})")
    offset = int(info.get("offset", 0))
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    count = int(np.prod(tensor.dims, dtype=np.int64))
    with (base_dir / location).open("rb") as handle:
        if tensor.data_type in _PLAIN_TYPES:
            value = np.fromfile(handle, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
            if value.size != count:
                raise ModelError(f"external data of tensor {tensor.name} is truncated")
            return value.astype(dtype, copy=False).reshape(tuple(tensor.dims))
        handle.seek(offset)
        length = int(info["length"]) if "length" in info else -1
        inline = onnx.TensorProto()
        inline.CopyFrom(tensor)
        del inline.external_data[:]
        inline.data_location = onnx.TensorProto.DEFAULT
        inline.raw_data = handle.read(length)
    return numpy_helper.to_array(inline)


# Element types whose raw bytes are the numpy array's (little-endian, one element each).
_PLAIN_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.UINT64,
    }
)


def link_external_data(model_path: Path, directory: Path) -> None:
    """Make ``model_path``'s external data files visible in ``directory`` under their own names,
    so that a model written there refers to them without copying them into memory.

    Hard links (onnxruntime and the ONNX checker refuse symbolic links that leave the model's
    directory); a copy when the directory is on another filesystem.
    """
    for data in external_data_files(model_path):
        target = directory / data.name
        try:
            os.link(data, target)
        except OSError:
            log.info("cannot hard-link %s into %s: copying it", data, directory)
            shutil.copyfile(data, target)


_ALIGN = 4096


def spill_array(value: np.ndarray, name: str, data_file: Path) -> onnx.TensorProto | None:
    """Append ``value`` to ``data_file`` and return a tensor that refers to it (external data),
    or None for element types whose bytes are not numpy's (those stay inline).

    The bytes never pass through a protobuf message: a message keeps every byte string it was
    given until it is freed, even after the field is cleared.
    """
    try:
        data_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    except (KeyError, TypeError, ValueError):
        return None
    if data_type not in _PLAIN_TYPES:
        return None
    with data_file.open("ab") as handle:
        offset = handle.seek(0, os.SEEK_END)
        handle.write(b"\0" * (-offset % _ALIGN))
        offset += -offset % _ALIGN
        np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tofile(handle)
    tensor = onnx.TensorProto(name=name, data_type=data_type, dims=value.shape)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, item in (("location", data_file.name), ("offset", offset), ("length", value.nbytes)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(item)
    return tensor


def write_model_streamed(model: onnx.ModelProto, path: Path, base_dir: Path) -> None:
    """Write a model whose tensors may live in external files under ``base_dir``, one tensor at
    a time: every initializer of 1 KiB or more goes to ``<path>.data``, and the whole model is
    never held (or serialised) in memory. ``model`` is left unchanged."""
    data_file = path.with_name(path.name + ".data")
    out = onnx.ModelProto()
    out.CopyFrom(model)  # small: the large tensors are external
    try:
        data_file.unlink(missing_ok=True)
        data_file.touch()
        for tensor in out.graph.initializer:
            external = uses_external_data(tensor)
            if external or tensor.ByteSize() >= 1024:
                value = read_tensor(tensor, base_dir)
                moved = spill_array(value, tensor.name, data_file)
                del value
                if moved is not None:
                    tensor.CopyFrom(moved)
                elif external:  # an exotic element type: inline it
                    tensor.CopyFrom(numpy_helper.from_array(read_tensor(tensor, base_dir)))
        onnx.save_model(out, str(path))
    except OSError as err:
        raise OutputWriteError(f"cannot write {path.name}: {_first_line(err)}") from err


def publish(staged_model: Path, output_path: Path, extra: dict[Path, Path] | None = None) -> None:
    """Move a staged model (and its external data) into place; data first, model last.

    ``extra`` maps further staged files (the JSON report, the recipe) to their destinations;
    they are moved just before the model. When any move fails, the files already moved by this
    call are removed again: a failed publish leaves neither a model nor its side files.
    """
    data_files = external_data_files(staged_model)
    moved: list[Path] = []
    try:
        for data in data_files:
            destination = output_path.parent / data.name
            os.replace(data, destination)
            moved.append(destination)
        for staged, destination in (extra or {}).items():
            shutil.move(staged, destination)  # may cross filesystems
            moved.append(destination)
        os.replace(staged_model, output_path)
    except BaseException as err:  # also a signal (Ctrl-C, SIGTERM) between two moves
        for path in moved:
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(err, OSError):
            raise OutputWriteError(f"cannot write {output_path}: {_first_line(err)}") from err
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
