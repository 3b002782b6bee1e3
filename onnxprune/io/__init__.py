"""Loading and saving models: clear errors, external data kept, atomic writes."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from ..errors import ModelError, OutputWriteError
from .atomic import (
    deferred_signals,
    first_line,
    publish,
    staging_dir,
    write_errors,
    write_model,
)
from .paths import check_model_suffix, check_output_path, default_output_path, read_files
from .sizes import (
    _GZIP_CHUNK,
    _gzip_chunks,
    external_data_files,
    gzip_size_bytes,
    gzip_size_later,
    model_size_bytes,
    proto_size_bytes,
)
from .tensors import _PLAIN_TYPES, read_tensor

__all__ = [
    "BIG_MODEL_BYTES",
    "_GZIP_CHUNK",
    "_gzip_chunks",
    "check_model_suffix",
    "check_output_path",
    "default_output_path",
    "deferred_signals",
    "external_data_files",
    "first_line",
    "gzip_size_bytes",
    "gzip_size_later",
    "is_big_model",
    "link_external_data",
    "load_for_reading",
    "load_model",
    "model_size_bytes",
    "proto_size_bytes",
    "publish",
    "read_files",
    "read_tensor",
    "spill_array",
    "staging_dir",
    "write_errors",
    "write_model",
    "write_model_streamed",
]

log = logging.getLogger(__name__)

# What the tests patch (``BIG_MODEL_BYTES``, ``spill_array``) and the code that reads it live
# here, in the package itself, so that patching ``onnxprune.io.NAME`` reaches every caller.


# Models whose file plus external data exceed this are handled in big-model mode: tensors stay
# on disk and are read one at a time (see docs and ``Pruner``). Protobuf's own limit is 2 GiB.
BIG_MODEL_BYTES = 1_500_000_000


def is_big_model(model_path: Path) -> bool:
    return model_size_bytes(model_path) > BIG_MODEL_BYTES


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
        raise ModelError(f"cannot read {path} or its external data: {first_line(err)}") from err
    if not model.opset_import or len(model.graph.node) == 0 or model.ir_version <= 0:
        raise ModelError(f"{path} is not a valid ONNX model (no graph, opset or IR version)")
    try:
        onnx.checker.check_model(str(real))
    except (onnx.checker.ValidationError, ValueError, OSError) as err:
        raise ModelError(f"{path} fails the ONNX checker: {first_line(err)}") from err
    return model


def load_for_reading(path: Path) -> tuple[onnx.ModelProto, Path | None]:
    """(model, directory to read its external tensors from): a big model (see
    ``BIG_MODEL_BYTES``) is loaded without its external data, to be read one tensor at a time
    (``GraphView(model, base_dir)``); other models are loaded whole (directory None)."""
    if is_big_model(path):
        return load_model(path, external_data=False), path.resolve().parent
    return load_model(path), None


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
        raise OutputWriteError(f"cannot write {path.name}: {first_line(err)}") from err
