"""The calibration batch shrinks where a batch's conv outputs would take more than
CALIBRATION_BATCH_BYTES; the statistics are sums over samples, so they stay the same."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from calib_stats import layer_statistics

from onnxprune.calibrate import runner
from onnxprune.calibrate.runner import CALIBRATION_BATCH_BYTES, calibration_batch
from onnxprune.calibrate.stats import LayerStats
from onnxprune.config import PruneConfig
from onnxprune.graph import GraphView
from onnxprune.layers import Layer, find_layers


def test_the_batch_is_kept_while_it_fits_and_shrinks_to_fit() -> None:
    assert calibration_batch(32, 1 << 20) == 32
    assert calibration_batch(32, CALIBRATION_BATCH_BYTES // 8) == 8
    assert calibration_batch(32, 140 << 20) == CALIBRATION_BATCH_BYTES // (140 << 20)
    # A sample larger than the whole allowance still runs, one at a time.
    assert calibration_batch(32, 2 * CALIBRATION_BATCH_BYTES) == 1
    assert calibration_batch(32, 0) == 32  # no conv layer


def _whole_and_split(
    model: onnx.ModelProto, samples: int, folder: Path, batch_bytes: int
) -> tuple[dict[str, LayerStats], dict[str, LayerStats], list[int]]:
    """The statistics of ``samples`` random samples in one batch and with
    CALIBRATION_BATCH_BYTES set to ``batch_bytes``, and the batch sizes the rule chose."""
    x = builders.random_inputs(model, samples, seed=3)
    (folder / "whole").mkdir()
    (folder / "split").mkdir()
    _, whole = layer_statistics(model, x, folder / "whole", samples, hessian=True)
    batches: list[int] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "CALIBRATION_BATCH_BYTES", batch_bytes)
        real = runner.calibration_batch
        patch.setattr(
            runner, "calibration_batch", lambda b, n: batches.append(real(b, n)) or batches[-1]
        )
        _, split = layer_statistics(model, x, folder / "split", samples, hessian=True)
    return whole, split, batches


def _assert_same_statistics(whole: dict[str, LayerStats], split: dict[str, LayerStats]) -> None:
    assert whole.keys() == split.keys()
    for name, stats in whole.items():
        got = split[name]
        assert got.inputs.count == stats.inputs.count
        pairs = [(got.inputs.x_sum, stats.inputs.x_sum), (got.inputs.xtx, stats.inputs.xtx)]
        if stats.gated is not None:
            assert got.gated is not None
            pairs.append((got.gated.gx_sum, stats.gated.gx_sum))
            pairs.append((got.gated.gx_sq_sum, stats.gated.gx_sq_sum))
        for actual, expected in pairs:
            # Float32 sums per batch, float64 across batches: equal to float32 rounding of
            # the largest entry.
            scale = float(np.abs(expected).max())
            np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


def test_smaller_batches_gather_the_same_statistics(tmp_path: Path) -> None:
    # A few samples' conv outputs per batch: the 20 samples run in several batches.
    whole, split, batches = _whole_and_split(builders.residual_cnn(seed=5), 20, tmp_path, 1)
    assert batches == [1]
    _assert_same_statistics(whole, split)


def test_dense_taps_count_the_input_and_gate_values_at_every_position() -> None:
    """A dense layer's taps hold, per position of its input [batch, ..., K], the input and its
    square (2K values) and, with gated statistics, the gate and its square (2 out)."""
    layers = builders_layers(builders.transformer_block(hidden=32, ffn=64))
    dense = [(x, x.nodes[0].input[x.op.data_input]) for x in layers]
    shapes = {name: (2, 6, x.matrix_shape[1]) for x, name in dense}  # batch 2, 6 positions
    # q, k, v and the output projection: 32 -> 32; the feed-forward 32 -> 64 -> 32.
    assert sorted(x.matrix_shape for x, _ in dense) == [(32, 32)] * 4 + [(32, 64), (64, 32)]
    expected = 4 * 6 * (4 * (64 + 64) + (64 + 128) + (128 + 64))
    assert runner._tapped_bytes_per_sample([], dense, shapes, gated=True) == expected
    ungated = sum(4 * 6 * 2 * x.matrix_shape[1] for x, _ in dense)
    assert runner._tapped_bytes_per_sample([], dense, shapes, gated=False) == ungated


def test_a_transformer_calibrates_in_smaller_batches_to_the_same_statistics(
    tmp_path: Path,
) -> None:
    model = builders.transformer_block(hidden=32, ffn=64, seed=4)
    # 7 samples' taps per batch: the per-sample count comes from the probed input shapes.
    dense = [(layer, layer.nodes[0].input[layer.op.data_input]) for layer in builders_layers(model)]
    shapes = {name: (1, 6, layer.matrix_shape[1]) for layer, name in dense}
    per_sample = runner._tapped_bytes_per_sample([], dense, shapes, gated=True)
    whole, split, batches = _whole_and_split(model, 24, tmp_path, 7 * per_sample)
    assert batches == [7]
    assert any(stats.gated is not None for stats in whole.values())
    _assert_same_statistics(whole, split)


def builders_layers(model: onnx.ModelProto) -> list[Layer]:
    return find_layers(GraphView(model), PruneConfig(sparsity=0.5)).layers
