"""Models stored with external data keep it, and the pruned weights land in the new data file."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import onnx
from ort_run import first_output

import onnxprune
from onnxprune.io import external_data_files


def test_external_data_model_is_pruned_into_its_own_data_file(tmp_path: Path) -> None:
    model = builders.mlp_matmul(sizes=(64, 128, 8))
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    model_path = source_dir / "mlp.onnx"
    onnx.save_model(
        model,
        str(model_path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="mlp.onnx.data",
        size_threshold=0,
    )
    data_before = (source_dir / "mlp.onnx.data").read_bytes()
    inputs = builders.random_inputs(model, 64, seed=3)
    calib = builders.write_npz(tmp_path / "calib.npz", inputs)
    output = tmp_path / "out" / "mlp.pruned.onnx"
    output.parent.mkdir()

    report = onnxprune.prune(model_path, calib, sparsity=0.5, output=output, method="magnitude")

    assert [p.name for p in external_data_files(output)] == ["mlp.pruned.onnx.data"]
    assert (source_dir / "mlp.onnx.data").read_bytes() == data_before  # input untouched
    onnx.checker.check_model(str(output), full_check=True)
    pruned = onnx.load(str(output))  # resolves the data file next to the output
    weights = [
        onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer if t.dims == [64, 128]
    ]
    assert len(weights) == 1 and np.count_nonzero(weights[0] == 0) == 64 * 128 // 2
    assert first_output(output, inputs).shape == (64, 8)
    assert report.achieved_sparsity == 0.5
