"""The layouts calibration data comes in (an .npz or .npy file, a directory of them,
``test_data_set_*`` directories of .pb tensors), each read as chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import CalibrationDataError
from .arrays import _check_arrays, _npy_header, _npz_headers, _read_npy, _read_npz
from .records import LABELS_KEY, Chunk, InputSpec


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
            return _read_npz(path)

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
