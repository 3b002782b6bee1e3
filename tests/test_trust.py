"""Trust, round 2 (issue 12): inputs never overwritten, clean deaths on signals, no lies.

Each test is one case of the catalogue in README ("Bad input and faults"): it failed on the
code before the fix and passes now.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from conftest import CliResult, CliRunner

from onnxprune.errors import EXIT_BAD_INPUT

SAMPLES = 64


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_one_line_error(result: CliResult, code: int, *words: str) -> str:
    assert result.code == code, result.err
    assert result.err.count("\n") == 1 and result.err.endswith("\n"), repr(result.err)
    assert result.err.startswith("onnxprune: error: "), result.err
    assert "Traceback" not in result.err + result.out
    for word in words:
        assert word.lower() in result.err.lower(), (word, result.err)
    return result.err


@pytest.fixture
def mlp(tmp_path: Path) -> tuple[Path, Path]:
    """(model, calibration .npz) for mlp_gemm (x float32[batch,16]) in tmp_path/in."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    model = models.mlp_gemm()
    return (
        models.save(model, inputs / "mlp.onnx"),
        models.write_npz(inputs / "calib.npz", models.random_inputs(model, SAMPLES, seed=1)),
    )


# ---------------------------------------------------------------------------------------------
# 4. Headers that lie about their size are refused before anything is allocated


def _lying_npy(x: np.ndarray, rows: int) -> bytes:
    """An .npy whose header claims ``rows`` rows but whose data holds ``x`` only."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(x.dtype), "fortran_order": False}
    np.lib.format.write_array_header_1_0(buffer, {**header, "shape": (rows, *x.shape[1:])})
    buffer.write(x.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["npz", "npy", "npy-dir"])
def test_header_claiming_a_billion_rows_is_refused_at_once(
    cli: CliRunner, tmp_path: Path, mlp: tuple[Path, Path], kind: str
) -> None:
    model, _ = mlp
    x = models.random_inputs(models.mlp_gemm(), 8, seed=0)["x"]
    data = _lying_npy(x, 10**9)
    if kind == "npz":
        calib = tmp_path / "liar.npz"
        with zipfile.ZipFile(calib, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("x.npy", data)
    elif kind == "npy":
        calib = tmp_path / "liar.npy"
        calib.write_bytes(data)
    else:
        calib = tmp_path / "liar"
        calib.mkdir()
        (calib / "x.npy").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    result = cli(model, "--calib", calib, "--sparsity", 0.5, "-o", out / "p.onnx", "-q")
    assert_one_line_error(result, EXIT_BAD_INPUT, "header", "1000000000", "bytes")
    assert _files(out) == []


def test_npz_whose_directory_claims_an_impossible_expansion_is_refused(
    cli: CliRunner, tmp_path: Path, mlp: tuple[Path, Path]
) -> None:
    model, calib = mlp
    # Rewrite the member's uncompressed size (central directory and local header) to 1 TB.
    with zipfile.ZipFile(calib) as archive:
        info = archive.getinfo("x.npy")
        payload = archive.read(info)
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", payload)
    raw = bytearray(liar.read_bytes())
    real = len(payload).to_bytes(4, "little")
    assert raw.count(real) >= 2
    liar.write_bytes(bytes(raw).replace(real, (2**32 - 1).to_bytes(4, "little")))
    result = cli(model, "--calib", liar, "--sparsity", 0.5, "-o", tmp_path / "p.onnx", "-q")
    assert_one_line_error(result, EXIT_BAD_INPUT, "liar.npz")
    assert not (tmp_path / "p.onnx").exists()


# ---------------------------------------------------------------------------------------------
# 6. A non-positive dim_value (Paddle's -1 batch) is a dynamic dimension


@pytest.mark.parametrize("builder", [models.mlp_gemm, models.cnn_bn, models.transformer_block])
def test_minus_one_dimensions_are_dynamic(
    cli: CliRunner, tmp_path: Path, builder: object
) -> None:
    model = builder()  # type: ignore[operator]
    data = models.random_inputs(model, SAMPLES, seed=0)
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.Clear()
                dim.dim_value = -1
    path = models.save(model, tmp_path / "paddle.onnx")
    calib = models.write_npz(tmp_path / "calib.npz", data)
    out = tmp_path / "pruned.onnx"
    result = cli(path, "--calib", calib, "--sparsity", 0.5, "-o", out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["calibration_samples"] > 0
    assert report["achieved_sparsity"] > 0.3  # the CNN's tiny stem keeps its row floor
    onnx.checker.check_model(str(out), full_check=True)
