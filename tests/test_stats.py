"""Calibration statistics: merging, and in-graph / im2col moments against direct computation."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import pytest
from calib_stats import layer_statistics
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from ort_run import intermediates

from onnxprune.calibrate.geometry import ConvGeometry, conv_moments
from onnxprune.calibrate.stats import dense_moments


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 60), st.integers(1, 8), st.integers(1, 5), st.integers(0, 2**16))
def test_merging_two_halves_equals_one_pass(rows: int, k: int, out: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, k))
    g2 = rng.random((rows, out))
    split = rows // 2
    whole_in, whole_g = dense_moments(x, g2)
    a_in, a_g = dense_moments(x[:split], g2[:split])
    b_in, b_g = dense_moments(x[split:], g2[split:])
    merged_in, merged_g = a_in.merge(b_in), a_g.merge(b_g)  # type: ignore[union-attr]
    assert merged_in.count == whole_in.count == rows
    np.testing.assert_allclose(merged_in.x_sum, whole_in.x_sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged_in.x_sq_sum, whole_in.x_sq_sum, rtol=1e-12, atol=1e-12)
    assert whole_g is not None
    np.testing.assert_allclose(merged_g.g2_sum, whole_g.g2_sum, rtol=1e-12)
    np.testing.assert_allclose(merged_g.gx_sum, whole_g.gx_sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged_g.gx_sq_sum, whole_g.gx_sq_sum, rtol=1e-12, atol=1e-12)


CONV_CASES = [
    pytest.param({"pads": [1, 1, 1, 1]}, 4, 6, (3, 3), id="pad1"),
    pytest.param({"strides": [2, 2], "pads": [0, 1, 1, 0]}, 4, 6, (3, 3), id="stride2-asym"),
    pytest.param({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, 4, 6, (3, 3), id="dilation2"),
    pytest.param({"group": 2, "pads": [1, 1, 1, 1]}, 4, 6, (3, 3), id="group2"),
    pytest.param({"group": 4, "pads": [1, 1, 1, 1]}, 4, 4, (3, 3), id="depthwise"),
    pytest.param({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 4, 6, (2, 2), id="same-upper"),
    pytest.param({"strides": [1, 2]}, 3, 5, (1, 3), id="rect-kernel"),
]


@pytest.mark.parametrize(("attrs", "cin", "cout", "kernel"), CONV_CASES)
def test_conv_moments_reproduce_the_conv_output(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    attrs: dict[str, object],
    cin: int,
    cout: int,
    kernel: tuple[int, int],
) -> None:
    """sum_n z_o(n) = W_o . sum_n patch(n) and sum_n g2 z_o = W_o . S1_o: the im2col column order,
    padding, strides, dilations and groups must all match the runtime's convolution. Every
    output position is gathered (narrow groups would otherwise be on a grid, which
    ``test_calibration_taps`` checks)."""
    monkeypatch.setattr("onnxprune.calibrate.conv_taps.NARROW_GROUP_COLUMNS", 0)
    rng = np.random.default_rng(0)
    group = int(attrs.get("group", 1))  # type: ignore[call-overload]
    weight = rng.normal(size=(cout, cin // group, *kernel)).astype(np.float32)
    x = rng.normal(size=(5, cin, 7, 9)).astype(np.float32)
    model = builders.conv_relu(weight, (7, 9), **attrs)
    layers, stats = layer_statistics(model, {"x": x}, tmp_path, batch=2)
    (z,) = intermediates(model, {"x": x}, ["z"])
    z = z.astype(np.float64)
    layer_stats = stats["w"]
    matrix = layers[0].matrix()  # [cout, K]
    x_sum_rows = layer_stats.row_expand(layer_stats.inputs.x_sum, cout)
    np.testing.assert_allclose(
        (matrix * x_sum_rows).sum(1), z.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-4
    )
    assert layer_stats.inputs.count == z.shape[0] * z.shape[2] * z.shape[3]
    gated = layer_stats.gated
    assert gated is not None and layer_stats.gate_kind == "relu"
    g2 = (z > 0).astype(np.float64)
    np.testing.assert_allclose(gated.g2_sum, g2.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(
        (matrix * gated.gx_sum).sum(1), (g2 * z).sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-4
    )


def test_dense_in_graph_moments_match_numpy_for_a_3d_matmul_with_erf_gelu(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    k, out = 6, 5
    weight = rng.normal(size=(k, out)).astype(np.float32)
    bias = rng.normal(size=(out,)).astype(np.float32)
    x = rng.normal(size=(7, 3, k)).astype(np.float32)
    consts = {
        "sqrt2": np.array(1.4142135, np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["z"]),
        helper.make_node("Div", ["z", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["z", "e1"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["y"]),
    ]
    model = builders.finish(
        "gelu",
        nodes,
        [builders.value_info("x", ["n", "s", k])],
        [builders.value_info("y", None)],
        {"w": weight, "b": bias, **consts},
        producer="",
        check=False,  # y's rank is left unknown
    )
    _, stats = layer_statistics(model, {"x": x}, tmp_path, batch=3)
    layer_stats = stats["w"]
    assert layer_stats.gate_kind == "gelu"

    x2d = x.reshape(-1, k).astype(np.float64)
    z = x2d @ weight.astype(np.float64) + bias
    from math import erf, exp, pi, sqrt

    derivative = np.vectorize(
        lambda v: 0.5 * (1 + erf(v / sqrt(2))) + v * exp(-v * v / 2) / sqrt(2 * pi)
    )
    g2 = derivative(z) ** 2
    expected_in, expected_g = dense_moments(x2d, g2)
    assert layer_stats.inputs.count == x2d.shape[0]
    np.testing.assert_allclose(layer_stats.inputs.x_sum, expected_in.x_sum, rtol=1e-5)
    np.testing.assert_allclose(layer_stats.inputs.x_sq_sum, expected_in.x_sq_sum, rtol=1e-5)
    assert layer_stats.gated is not None and expected_g is not None
    np.testing.assert_allclose(layer_stats.gated.g2_sum, expected_g.g2_sum, rtol=1e-4)
    np.testing.assert_allclose(layer_stats.gated.gx_sum, expected_g.gx_sum, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        layer_stats.gated.gx_sq_sum, expected_g.gx_sq_sum, rtol=1e-4, atol=1e-5
    )


CONV1D_CASE = pytest.param({"pads": [1, 2], "strides": [2]}, 3, 4, (3,), id="conv1d")


@pytest.mark.parametrize(("attrs", "cin", "cout", "kernel"), [*CONV_CASES, CONV1D_CASE])
def test_in_graph_conv_moments_equal_numpy_im2col(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    attrs: dict[str, object],
    cin: int,
    cout: int,
    kernel: tuple[int, ...],
) -> None:
    """Every moment the graph reduces (sums, K x K input correlation, gated products) equals
    the float64 numpy im2col reference ``conv_moments`` on the same batches, over every
    output position (narrow groups on a grid: ``test_calibration_taps``)."""
    monkeypatch.setattr("onnxprune.calibrate.conv_taps.NARROW_GROUP_COLUMNS", 0)
    rng = np.random.default_rng(3)
    group = int(attrs.get("group", 1))  # type: ignore[call-overload]
    spatial = (7, 9)[: len(kernel)] if len(kernel) == 2 else (11,)
    weight = rng.normal(size=(cout, cin // group, *kernel)).astype(np.float32)
    x = rng.normal(size=(5, cin, *spatial)).astype(np.float32)
    model = builders.conv_relu(weight, spatial, **attrs)
    _, stats = layer_statistics(model, {"x": x}, tmp_path, batch=2, hessian=True)
    got = stats["w"]
    (z,) = intermediates(model, {"x": x}, ["z"])
    geometry = ConvGeometry.from_node(model.graph.node[0], weight.shape)
    want_in, want_g = conv_moments(x, (z > 0).astype(np.float32), geometry, cout, hessian=True)
    assert got.inputs.count == want_in.count
    assert got.inputs.xtx is not None and want_in.xtx is not None
    for name in ("x_sum", "x_sq_sum", "xtx"):
        np.testing.assert_allclose(
            getattr(got.inputs, name), getattr(want_in, name), rtol=1e-5, atol=1e-4
        )
    assert got.gated is not None and want_g is not None
    for name in ("g2_sum", "gx_sum", "gx_sq_sum"):
        np.testing.assert_allclose(
            getattr(got.gated, name), getattr(want_g, name), rtol=1e-5, atol=1e-4
        )
