"""How the artifact is stored: sparse initializers, onnxruntime's .ort format."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError
from ..io import first_line as _first_line
from ..session import tool_sessions_quiet

# One logger for the whole artifact stage, named as before the split.
log = logging.getLogger(__package__)


# A sparse tensor's fixed cost beyond values and indices (two TensorProto headers, dims).
_SPARSE_OVERHEAD_BYTES = 32
# ONNX requires int64 COO indices: 8 bytes per stored value.
_INDEX_BYTES = 8


def sparse_storage(source: Path, destination: Path) -> int:
    """Rewrite every initializer that is smaller in COO form (values + int64 linear indices)
    as a ``sparse_initializer``; returns how many were rewritten. Graph inputs that double as
    initializers (old exporters) stay dense: a sparse initializer cannot be overridden."""
    model = onnx.load(str(source))
    graph_inputs = {i.name for i in model.graph.input}
    dense: list[onnx.TensorProto] = []
    sparse: list[onnx.SparseTensorProto] = []
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        # INT4 tables (--embedding-bits 4) are packed two per byte: already smaller than COO.
        if (
            tensor.name in graph_inputs
            or array.ndim == 0
            or array.dtype == np.object_
            or tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
        ):
            dense.append(tensor)
            continue
        flat = array.reshape(-1)
        nonzero = np.flatnonzero(flat)
        sparse_bytes = nonzero.size * (array.itemsize + _INDEX_BYTES) + _SPARSE_OVERHEAD_BYTES
        if sparse_bytes >= array.nbytes:
            dense.append(tensor)
            continue
        values = numpy_helper.from_array(flat[nonzero], tensor.name)
        indices = numpy_helper.from_array(nonzero.astype(np.int64))
        sparse.append(onnx.helper.make_sparse_tensor(values, indices, list(array.shape)))
    del model.graph.initializer[:]
    model.graph.initializer.extend(dense)
    model.graph.sparse_initializer.extend(sparse)
    onnx.save_model(model, str(destination))
    return len(sparse)


def convert_to_ort(source: Path, destination: Path) -> None:
    """onnxruntime's mobile format, written by onnxruntime's own converter
    (``convert_onnx_models_to_ort``, optimisation style "Fixed": the graph optimised once at
    the "all" level, without the platform-specific NCHWc layout, saved as a flatbuffer). The
    converter prints its progress and writes a ``required_operators.config`` beside the model:
    both stay in a scratch directory / the debug log."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    chatter = io.StringIO()
    # The converter's own logger says where it wrote the operator config (INFO, on stderr).
    converter_log = logging.getLogger("ort_format_model.utils")
    level = converter_log.level
    with tempfile.TemporaryDirectory(prefix="onnxprune-ort-") as tmp:
        model = Path(tmp) / "model.onnx"
        shutil.copyfile(source, model)  # the converter names its output after its input
        try:
            converter_log.setLevel(logging.WARNING)
            # The converter reads the .ort file back without closing it (a ResourceWarning when
            # the file object is collected): that is onnxruntime's, not the user's concern.
            with (
                contextlib.redirect_stdout(chatter),
                warnings.catch_warnings(),
                tool_sessions_quiet(),
            ):
                warnings.simplefilter("ignore", ResourceWarning)
                convert_onnx_models_to_ort(model, Path(tmp) / "out", [OptimizationStyle.Fixed])
        except Exception as err:  # the converter raises whatever onnxruntime raised
            log.debug("ORT format conversion failed: %s", chatter.getvalue(), exc_info=True)
            raise ModelError(f"--format ort: conversion failed: {_first_line(err)}") from err
        finally:
            converter_log.setLevel(level)
        log.debug("%s", chatter.getvalue())
        converted = Path(tmp) / "out" / "model.ort"
        if not converted.is_file():
            raise ModelError("--format ort: onnxruntime's converter wrote no .ort file")
        shutil.move(converted, destination)
