"""The float32 fixed-mask OBS walk (``obs_fast``) against the float64 one it replaces."""

from __future__ import annotations

import builders
import numpy as np
import pytest

from onnxprune.hessian import inverse_hessian_factors
from onnxprune.masking import row_mask
from onnxprune.obs_fast import walk_fixed_mask
from onnxprune.reconstruct import reconstruct


def _layer(rows: int, columns: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A weight [rows, columns] and correlated inputs' x^T x (1, K, K) with one dead input."""
    samples = 3 * columns
    inputs = builders.correlated_inputs(samples, columns, seed)
    rng = np.random.default_rng(seed + 1)
    inputs *= rng.uniform(0.05, 3.0, size=columns)  # inputs of very different scales
    inputs[:, 3] = 0.0  # an input that was 0 on every sample
    weight = rng.normal(size=(rows, columns)) / np.sqrt(columns)
    return weight, (inputs.T @ inputs)[None], samples


@pytest.mark.parametrize(("rows", "columns", "sparsity"), [(48, 40, 0.5), (20, 150, 0.7)])
def test_float32_walk_equals_the_float64_walk_to_float32_precision(
    rows: int, columns: int, sparsity: float
) -> None:
    """Same kept weights to ~1e-6 of the largest (several 64-column blocks in the second
    case), the removed ones exactly 0, and the same layer output error."""
    weight, xtx, count = _layer(rows, columns, rows + columns)
    factor = inverse_hessian_factors(xtx, count)[0]
    keep = row_mask(np.abs(weight) * np.sqrt(np.diag(xtx[0]) + 1e-9), sparsity)
    expected, kept = reconstruct(weight, factor, keep)
    got = walk_fixed_mask(weight, factor, keep)
    assert got.dtype == np.float32 and got.shape == weight.shape
    np.testing.assert_array_equal(kept, keep)
    assert not got[~keep].any()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * scale)

    def output_error(pruned: np.ndarray) -> float:
        diff = weight - pruned
        return float(np.einsum("ij,jk,ik->", diff, xtx[0], diff))

    assert output_error(got) == pytest.approx(output_error(expected), rel=1e-4)
    assert output_error(got) < output_error(np.where(keep, weight, 0.0))
