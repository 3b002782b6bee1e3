"""Models over 2 GB: big-model mode (weights on disk, read one layer at a time).

The non-slow tests force big-model mode on small models by lowering the threshold and check it
against the normal path; the slow test generates a model over 2 GB and runs the CLI on it.
"""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import onnxprune
import onnxprune.calibrate.runner
import onnxprune.io
from onnxprune.config import PruneConfig
from onnxprune.io import external_data_files
from onnxprune.pipeline import Pruner


def _save_external(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0,
    )
    return path


def _weights(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize(
    ("method", "group"),
    [("contrib", "row"), ("wanda", None), ("contrib", "global"), ("sparsegpt", None)],
)
def test_big_model_mode_matches_the_normal_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, group: str | None
) -> None:
    model = models.mlp_matmul(sizes=(32, 64, 48, 8))
    source = _save_external(model, tmp_path / "in" / "mlp.onnx")
    inputs = models.random_inputs(model, 80, seed=1)
    calib = models.write_npz(tmp_path / "calib.npz", inputs)
    kwargs = {"sparsity": 0.5, "method": method, "group": group}
    (tmp_path / "normal").mkdir()
    normal = onnxprune.prune(source, calib, output=tmp_path / "normal" / "m.onnx", **kwargs)
    monkeypatch.setattr(onnxprune.io, "BIG_MODEL_BYTES", 0)
    # Several calibration parts: one layer's statistics each.
    monkeypatch.setattr(onnxprune.calibrate.runner, "PART_BYTES", 1)
    (tmp_path / "big").mkdir()
    big = onnxprune.prune(source, calib, output=tmp_path / "big" / "m.onnx", **kwargs)

    out = tmp_path / "big" / "m.onnx"
    assert [p.name for p in external_data_files(out)] == ["m.onnx.data"]
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == [
        "m.onnx",
        "m.onnx.data",
        "m.onnx.recipe.json",
    ]
    onnx.checker.check_model(str(out), full_check=True)
    assert big.achieved_sparsity == normal.achieved_sparsity
    assert [layer.nonzero_after for layer in big.layers] == [
        layer.nonzero_after for layer in normal.layers
    ]
    expected, got = _weights(tmp_path / "normal" / "m.onnx"), _weights(out)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.array_equal(got[name] == 0, value == 0), name
    run_normal = ort.InferenceSession(str(tmp_path / "normal" / "m.onnx"))
    run_big = ort.InferenceSession(str(out))
    np.testing.assert_allclose(
        run_big.run(None, inputs)[0], run_normal.run(None, inputs)[0], rtol=1e-4, atol=1e-5
    )
    assert big.fidelity is not None and normal.fidelity is not None
    assert big.fidelity.outputs[0].cosine == pytest.approx(normal.fidelity.outputs[0].cosine)


def test_big_model_mode_reads_no_weight_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proto is loaded without its data; layers read their weight on access; the work
    directory is removed by close()."""
    model = models.mlp_matmul(sizes=(32, 64, 8))
    weights = models.stored_weights(model)  # before saving moves them out of the proto
    source = _save_external(model, tmp_path / "mlp.onnx")
    calib = models.write_npz(tmp_path / "calib.npz", models.random_inputs(model, 16, seed=0))
    monkeypatch.setattr(onnxprune.io, "BIG_MODEL_BYTES", 0)
    pruner = Pruner(source, calib, PruneConfig(sparsity=0.5))
    assert pruner.big and pruner.base_dir is not None
    assert all(not t.HasField("raw_data") for t in pruner.proto.graph.initializer)
    assert all(layer.value is None for layer in pruner.layers)
    np.testing.assert_array_equal(pruner.layers[0].weight, weights["W0"])
    work = pruner.base_dir
    assert (work / "mlp.onnx.data").exists()
    pruner.close()
    assert not work.exists()


def test_big_model_default_group_auto_uses_row_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = models.mlp_matmul(sizes=(32, 64, 8))
    source = _save_external(model, tmp_path / "mlp.onnx")
    calib = models.write_npz(tmp_path / "calib.npz", models.random_inputs(model, 40, seed=0))
    monkeypatch.setattr(onnxprune.io, "BIG_MODEL_BYTES", 0)
    report = onnxprune.prune(source, calib, sparsity=0.5, output=tmp_path / "out.onnx")
    assert report.group == "auto -> row"
    assert any("--group auto tried no candidates" in w for w in report.warnings)
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)
