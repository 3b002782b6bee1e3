"""Uncompressed .npz members are memory-mapped (``arrays._read_npz``): the same arrays as
``np.load`` gives, and the same pruned model as from a compressed archive of the same data."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune.calibrate.arrays import _read_npz
from onnxprune.errors import CalibrationDataError


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((7, 16)).astype(np.float32),
        "ids": np.asfortranarray(rng.integers(0, 9, (5, 3, 4))),
        "empty": np.zeros((0, 4), np.float16),
        "labels": np.arange(7),
    }


def test_stored_members_are_mapped_and_equal_to_np_load(tmp_path: Path) -> None:
    stored, packed = tmp_path / "stored.npz", tmp_path / "packed.npz"
    np.savez(stored, **_arrays())  # type: ignore[arg-type]
    np.savez_compressed(packed, **_arrays())  # type: ignore[arg-type]
    for path in (stored, packed):
        got = _read_npz(path)
        with np.load(path) as expected:
            assert sorted(got) == sorted(expected.files)
            for name in expected.files:
                assert got[name].dtype == expected[name].dtype
                np.testing.assert_array_equal(got[name], expected[name])
    mapped = _read_npz(stored)
    assert isinstance(mapped["x"], np.memmap) and not mapped["x"].flags.writeable
    assert mapped["ids"].flags.f_contiguous
    assert not any(isinstance(a, np.memmap) for a in _read_npz(packed).values())


def test_a_truncated_member_is_a_calibration_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.npz"
    np.savez(path, x=np.ones((64, 64), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CalibrationDataError, match=r"cut\.npz"):
        _read_npz(path)


def test_mapped_and_compressed_calibration_write_the_same_model(tmp_path: Path) -> None:
    model = builders.mlp_gemm(seed=3)
    model_path = builders.save(model, tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((48, 16)).astype(np.float32)
    stored, packed = tmp_path / "stored.npz", tmp_path / "packed.npz"
    np.savez(stored, x=x)
    np.savez_compressed(packed, x=x)
    outputs = []
    for calib in (stored, packed):
        out = tmp_path / f"{calib.stem}.onnx"
        onnxprune.prune(model_path, calib, output=out, sparsity=0.5)
        outputs.append(onnx.load(str(out)).graph.initializer)
    assert [t.SerializeToString() for t in outputs[0]] == [
        t.SerializeToString() for t in outputs[1]
    ]
