"""The calibration batch shrinks where a batch's conv outputs would take more than
CALIBRATION_BATCH_BYTES; the statistics are sums over samples, so they stay the same."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import pytest
from calib_stats import layer_statistics

from onnxprune.calibrate import runner
from onnxprune.calibrate.runner import CALIBRATION_BATCH_BYTES, calibration_batch


def test_the_batch_is_kept_while_it_fits_and_shrinks_to_fit() -> None:
    assert calibration_batch(32, 1 << 20) == 32
    assert calibration_batch(32, CALIBRATION_BATCH_BYTES // 8) == 8
    assert calibration_batch(32, 140 << 20) == CALIBRATION_BATCH_BYTES // (140 << 20)
    # A sample larger than the whole allowance still runs, one at a time.
    assert calibration_batch(32, 2 * CALIBRATION_BATCH_BYTES) == 1
    assert calibration_batch(32, 0) == 32  # no conv layer


def test_smaller_batches_gather_the_same_statistics(tmp_path: Path) -> None:
    model = builders.residual_cnn(seed=5)
    x = builders.random_inputs(model, 20, seed=3)
    (tmp_path / "whole").mkdir()
    (tmp_path / "split").mkdir()
    _, whole = layer_statistics(model, x, tmp_path / "whole", 20, hessian=True)
    with pytest.MonkeyPatch.context() as patch:
        # A few samples' conv outputs per batch: the 20 samples run in several batches.
        patch.setattr(runner, "CALIBRATION_BATCH_BYTES", 1)
        batches: list[int] = []
        real = runner.calibration_batch
        patch.setattr(
            runner, "calibration_batch", lambda b, n: batches.append(real(b, n)) or batches[-1]
        )
        _, split = layer_statistics(model, x, tmp_path / "split", 20, hessian=True)
    assert batches == [1]
    assert whole.keys() == split.keys()
    for name, stats in whole.items():
        got = split[name]
        assert got.inputs.count == stats.inputs.count
        pairs = [(got.inputs.x_sum, stats.inputs.x_sum), (got.inputs.xtx, stats.inputs.xtx)]
        if stats.gated is not None:
            assert got.gated is not None
            pairs.append((got.gated.gx_sum, stats.gated.gx_sum))
        for actual, expected in pairs:
            # Float32 sums per batch, float64 across batches: equal to float32 rounding of
            # the largest entry.
            scale = float(np.abs(expected).max())
            np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)
