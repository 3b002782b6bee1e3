"""onnxruntime sessions: built from a path, errors translated into one line."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Container, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .errors import CalibrationDataError, ModelError
from .io import proto_size_bytes, write_model

# Protobuf's hard limit; above it a model must live on disk with external data.
_INLINE_LIMIT = 1_800_000_000
# onnxruntime's own logger writes to the process's stderr (not through Python); errors reach
# the user through our one-line messages instead, so only fatal ones may print.
_ORT_LOG_FATAL_ONLY = 4
# onnxruntime's default logger's severities: warning (its default) and error.
_ORT_LOG_WARNING, _ORT_LOG_ERROR = 2, 3


@contextlib.contextmanager
def tool_sessions_quiet() -> Iterator[None]:
    """Within the block, sessions that onnxruntime's own tools build (the quantizer, the
    .ort converter: their options are not ours to set) log only errors through onnxruntime's
    default logger; its warnings there are about the tools' own graph rewrites (an
    initializer they left unused). Then back at onnxruntime's default, warnings."""
    ort.set_default_logger_severity(_ORT_LOG_ERROR)
    try:
        yield
    finally:
        ort.set_default_logger_severity(_ORT_LOG_WARNING)


def save_for_session(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` where onnxruntime can load it by path (external data when large)."""
    write_model(model, path, external_data=proto_size_bytes(model) > _INLINE_LIMIT)
    return path


# Initializers at least this large are handed to onnxruntime as arrays, not serialized.
_INLINE_BYTES = 4096
# Where the stripped initializers of an in-memory session say their data is (never read:
# onnxruntime takes the values given with ``add_external_initializers`` instead).
_IN_MEMORY = "onnxprune-in-memory"


def placeholder(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """``tensor``'s name, type and shape without its data: an external-data entry whose
    values are given to the session (``session_in_memory``)."""
    header = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type)
    header.dims.extend(tensor.dims)
    header.data_location = onnx.TensorProto.EXTERNAL
    entry = header.external_data.add()
    entry.key, entry.value = "location", _IN_MEMORY
    return header


def header_model(model: onnx.ModelProto, held: Container[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers named in ``held`` are ``placeholder``s, made
    without copying their data (``CopyFrom`` would copy every weight once more): for a session
    over a variant of the model that takes the run's already-read arrays."""
    header = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(header, field.name, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(header.graph, field.name, value)
    header.graph.initializer.extend(
        placeholder(t) if t.name in held else t for t in model.graph.initializer
    )
    return header


def _copy_field(target: object, name: str, value: object) -> None:
    """Set one field of a protobuf message ``target`` to a copy of ``value``."""
    if hasattr(value, "ListFields"):  # a message
        getattr(target, name).CopyFrom(value)
    elif isinstance(value, (str, bytes, int, float)):
        setattr(target, name, value)
    else:  # a repeated field
        getattr(target, name).extend(value)


# Element types numpy and onnxruntime share a layout for (bfloat16, float8 and the like
# stay in the proto).
_MOVABLE_TYPES = frozenset(
    getattr(onnx.TensorProto, name)
    for name in (
        "FLOAT", "FLOAT16", "DOUBLE", "BOOL", "INT8", "UINT8", "INT16", "UINT16",
        "INT32", "UINT32", "INT64", "UINT64",
    )
)  # fmt: skip


def movable(tensor: onnx.TensorProto) -> bool:
    """Whether an initializer is large and of a plain numeric type, to be passed as an
    array."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.data_type not in _MOVABLE_TYPES:
        return False
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize >= _INLINE_BYTES


def session_in_memory(
    model: onnx.ModelProto,
    arrays: Mapping[str, np.ndarray] | None = None,
    consume: bool = False,
    arena: bool = True,
    spin: bool = True,
) -> ort.InferenceSession:
    """A session over ``model`` without writing it or serializing its weights: with
    ``arrays`` (name -> value, a superset: the run's whole table may be passed), the model's
    initializers of those names are ``placeholder``s and take these values; without, large
    initializers of a copy (of ``model`` itself with ``consume``: a throw-away model is not
    copied) are replaced by placeholders here. onnxruntime uses the arrays' memory (kept alive
    with the session) and still pre-packs them as constants. Big-model mode keeps using
    files. ``arena``, ``spin``: see ``_options``."""
    if arrays is None:
        header = model
        if not consume:
            header = onnx.ModelProto()
            header.CopyFrom(model)
        arrays = {}
        for k, tensor in enumerate(header.graph.initializer):
            if movable(tensor):
                arrays[tensor.name] = onnx.numpy_helper.to_array(tensor)
                header.graph.initializer[k].CopyFrom(placeholder(tensor))
        model = header
    options = _options(arena, spin)
    names = [t.name for t in model.graph.initializer if t.name in arrays]
    values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arrays[n])) for n in names]
    if names:
        options.add_external_initializers(names, values)
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # ORT raises its own pybind exception types
        raise ModelError(f"onnxruntime cannot load the model: {first_line(err)}") from err
    # The session reads the arrays' memory: they live as long as it does.
    session.onnxprune_values = values  # type: ignore[attr-defined]
    return session


def _options(arena: bool = True, spin: bool = True) -> ort.SessionOptions:
    """Session options of every onnxprune session.

    Nodes run in onnxruntime's priority-based order, which frees each intermediate tensor
    soon after its last reader: the calibration graph reads many intermediates once more at
    its statistic taps, and in the default order they stayed alive together (a 62-layer
    detector at 640 px peaked at 8.3 GB RSS instead of 2.2 GB, and paging made its
    calibration pass 3x slower). ``arena=False`` (sessions whose large intermediates live for
    one pass, such as calibration) returns freed memory instead of keeping the arena's peak:
    2.2 GB -> 1.7 GB on that detector at no measured cost in time.

    ``spin=False`` (the sessions that judge candidates: short runs on a few samples, with
    numpy work on the pruned layers between them): onnxruntime's worker threads sleep
    between parallel sections instead of busy-waiting, which took the cores from that numpy
    work and from the run itself on a shared 2-core machine (EfficientNet-Lite0's judging at
    --sparsity 0.5: 14.7 / 12.5 s -> 10.7 / 7.8 s, two interleaved pairs, loaded machine).
    """
    options = ort.SessionOptions()
    options.log_severity_level = _ORT_LOG_FATAL_ONLY
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.enable_cpu_mem_arena = arena
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def make_session(path: Path, arena: bool = True) -> ort.InferenceSession:
    options = _options(arena)
    try:
        # Resolved: onnxruntime looks for external data beside the real file, not the link.
        return ort.InferenceSession(
            str(path.resolve()), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # ORT raises its own pybind exception types
        raise ModelError(f"onnxruntime cannot load the model: {first_line(err)}") from err


def run(
    session: ort.InferenceSession,
    outputs: Sequence[str] | None,
    feed: dict[str, np.ndarray],
    source: str,
) -> list[np.ndarray]:
    """``session.run``; a batch onnxruntime rejects becomes one CalibrationDataError line that
    names the source and every input with its dtype and shape."""
    run_options = ort.RunOptions()
    run_options.log_severity_level = _ORT_LOG_FATAL_ONLY
    try:
        return session.run(  # type: ignore[no-any-return]
            list(outputs) if outputs is not None else None, feed, run_options
        )
    except Exception as err:
        inputs = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in feed.items())
        raise CalibrationDataError(
            f"onnxruntime rejected a batch from {source} (input {inputs}): {ort_message(err)}"
        ) from err


def ort_message(err: BaseException) -> str:
    """onnxruntime's error without its status prefix and C++ source locations, one line: its
    lines joined (a shape error gives the offending index on its second line)."""
    text = " ".join(line.strip() for line in str(err).strip().splitlines()) or type(err).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    # "Status Message: /onnxruntime_src/...:84 onnxruntime::F(args) cond was false. Why" -> Why
    text = re.sub(r"Status Message: \S*onnxruntime_src\S* .*? was false\. ", "", text)
    text = re.sub(r"Status Message: \S*onnxruntime_src\S*:\d+ \S+ ", "", text)
    text = text.replace("Non-zero status code returned while running ", "")
    # Nodes onnxprune added to compute statistics are not the user's: say what they are.
    text = re.sub(
        r"\w+ node\. Name:'onnxprune/[^']*'",
        "a node onnxprune added to read a layer's input:",
        text,
    )
    return text[:300]


def first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line[:limit]
