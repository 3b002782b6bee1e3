"""Reading one tensor's value, from inline bytes or from its external data file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from ..errors import ModelError


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
