"""How the augmented calibration graph reads the model: a conv behind a zero Pad is tapped before
the Pad (so onnxruntime can keep the Pad fused into the model's Conv), with the same moments."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from calib_stats import layer_statistics
from onnx import helper, numpy_helper
from ort_run import intermediates

from onnxprune.calibrate import conv_taps
from onnxprune.calibrate.augment import build_plan
from onnxprune.calibrate.conv_taps import MIN_CONV_POSITIONS, position_step
from onnxprune.calibrate.geometry import ConvGeometry, conv_moments
from onnxprune.config import PruneConfig
from onnxprune.graph import GraphView
from onnxprune.layers import find_layers


def _conv_model(pads: list[int], pad_node: bool, pad_value: float = 0.0) -> onnx.ModelProto:
    """x [n, 4, 9, 9] -> (Pad ->) Conv 3x3 stride 2 (6 out) -> Relu. With ``pad_node`` the
    spatial ``pads`` (begin_h, begin_w, end_h, end_w) are a Pad node before the Conv, else
    the Conv's own attribute: the two models compute the same function."""
    weight = np.random.default_rng(5).normal(size=(6, 4, 3, 3)).astype(np.float32)
    if pad_node:
        return builders.conv_relu(weight, (9, 9), "padded_conv", pads, pad_value, strides=[2, 2])
    return builders.conv_relu(weight, (9, 9), "padded_conv", strides=[2, 2], pads=pads)


def _statistics(model: onnx.ModelProto, tmp_path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    got = layer_statistics(model, {"x": x}, tmp_path, 3, hessian=True)[1]["w"]
    assert got.gated is not None and got.inputs.xtx is not None
    return {
        "x_sum": got.inputs.x_sum,
        "x_sq_sum": got.inputs.x_sq_sum,
        "xtx": got.inputs.xtx,
        "gx_sum": got.gated.gx_sum,
        "count": np.array(got.inputs.count),
    }


@pytest.mark.parametrize("pads", [[1, 1, 1, 1], [0, 1, 2, 0]], ids=["same", "asymmetric"])
def test_conv_behind_a_zero_pad_is_tapped_before_the_pad(tmp_path: Path, pads: list[int]) -> None:
    x = np.random.default_rng(6).normal(size=(7, 4, 9, 9)).astype(np.float32)
    with_pad_node = _conv_model(pads, pad_node=True)
    plan = build_plan(
        with_pad_node,
        find_layers(GraphView(with_pad_node), PruneConfig(sparsity=0.5)).layers,
        True,
        True,
    )
    readers = [n for n in plan.model.graph.node if "xp" in n.input]
    assert [n.op_type for n in readers] == ["Conv"]  # only the model's own Conv reads it

    tapped = _statistics(with_pad_node, tmp_path, x)
    folded = _statistics(_conv_model(pads, pad_node=False), tmp_path, x)
    for name, want in folded.items():
        np.testing.assert_allclose(tapped[name], want, rtol=1e-6, atol=1e-5, err_msg=name)


def test_a_pad_with_a_non_zero_value_is_tapped_after_the_pad(tmp_path: Path) -> None:
    model = _conv_model([1, 1, 1, 1], pad_node=True, pad_value=0.5)
    plan = build_plan(
        model, find_layers(GraphView(model), PruneConfig(sparsity=0.5)).layers, True, True
    )
    readers = sorted(n.op_type for n in plan.model.graph.node if "xp" in n.input)
    assert readers == ["Cast", "Conv"]  # the tap reads the padded tensor itself


def test_pads_computed_from_constants_are_folded(tmp_path: Path) -> None:
    """TF-style exporters compute a Pad's pads from constants (ConstantOfShape, Concat, ...):
    they are evaluated at planning time, and the conv is still tapped before the Pad."""
    model = _conv_model([1, 1, 1, 1], pad_node=True)
    stored = next(t for t in model.graph.initializer if t.name == "pads")
    model.graph.initializer.remove(stored)
    spatial = numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "spatial_pads")
    zeros = numpy_helper.from_array(np.array([2], np.int64), "two")
    halves = numpy_helper.from_array(np.array([2, 2], np.int64), "halves")
    model.graph.initializer.extend([spatial, zeros, halves])
    computed = [
        helper.make_node(
            "ConstantOfShape",
            ["two"],
            ["zero_pads"],
            value=numpy_helper.from_array(np.array([0], np.int64)),
        ),
        # (0, 0, 1, 1, 0, 0, 1, 1): batch and channel zeros around the spatial pads
        helper.make_node("Split", ["spatial_pads", "halves"], ["begin", "end"], axis=0),
        helper.make_node("Concat", ["zero_pads", "begin", "zero_pads", "end"], ["pads"], axis=0),
    ]
    for position, node in enumerate(computed):
        model.graph.node.insert(position, node)
    x = np.random.default_rng(7).normal(size=(5, 4, 9, 9)).astype(np.float32)
    plan = build_plan(
        model, find_layers(GraphView(model), PruneConfig(sparsity=0.5)).layers, True, True
    )
    assert [n.op_type for n in plan.model.graph.node if "xp" in n.input] == ["Conv"]
    tapped = _statistics(model, tmp_path, x)
    folded = _statistics(_conv_model([1, 1, 1, 1], pad_node=False), tmp_path, x)
    for name, want in folded.items():
        np.testing.assert_allclose(tapped[name], want, rtol=1e-6, atol=1e-5, err_msg=name)


def _pads_graph(custom_op: bool) -> onnx.ModelProto:
    """x -> Pad(a) -> Pad(b) -> Pad(c): ``a``'s pads are Concat(begin, end) of stored halves,
    ``b``'s are a ConstantOfShape, ``c``'s depend on the input's shape (not foldable); with
    ``custom_op`` ``b``'s come from an op onnx's reference evaluator does not know."""
    halves = [
        numpy_helper.from_array(np.array([0, 0, 1, 2], np.int64), "begin"),
        numpy_helper.from_array(np.array([0, 0, 3, 4], np.int64), "end"),
        numpy_helper.from_array(np.array([8], np.int64), "eight"),
    ]
    b_pads = helper.make_node(
        "ConstantOfShape",
        ["eight"],
        ["b_pads"],
        value=numpy_helper.from_array(np.array([1], np.int64)),
    )
    if custom_op:
        b_pads = helper.make_node("Mystery", ["eight"], ["b_pads"], domain="custom.ops")
    nodes = [
        helper.make_node("Concat", ["begin", "end"], ["a_pads"], axis=0),
        b_pads,
        helper.make_node("Shape", ["x"], ["c_pads_half"]),
        helper.make_node("Concat", ["c_pads_half", "c_pads_half"], ["c_pads"], axis=0),
        helper.make_node("Pad", ["x", "a_pads"], ["xa"]),
        helper.make_node("Pad", ["xa", "b_pads"], ["xb"]),
        helper.make_node("Pad", ["xb", "c_pads"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pads",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        halves,
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("custom.ops", 1)]
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize("custom_op", [False, True], ids=["together", "one-at-a-time"])
def test_every_pads_computed_from_constants_is_folded_in_one_evaluation(
    monkeypatch: pytest.MonkeyPatch, custom_op: bool
) -> None:
    """The Pads' computed pads are evaluated together, in one run of onnx's reference
    evaluator; when one chain has an op it cannot run, the others are still folded (one at a
    time), and pads that depend on a graph input never are."""
    from onnx import reference

    from onnxprune.calibrate.padding import PadFolder

    evaluators = []
    real = reference.ReferenceEvaluator

    def counting(*args: object, **kwargs: object) -> object:
        evaluators.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(reference, "ReferenceEvaluator", counting)
    folder = PadFolder(GraphView(_pads_graph(custom_op)))
    np.testing.assert_array_equal(folder.value("a_pads"), [0, 0, 1, 2, 0, 0, 3, 4])
    b_pads = folder.value("b_pads")
    np.testing.assert_array_equal(folder.value("begin"), [0, 0, 1, 2])  # stored: as it is
    assert folder.value("c_pads") is None
    if custom_op:
        assert b_pads is None
        # together (failed), then "a_pads" and "b_pads" alone ("c_pads" has no chain)
        assert len(evaluators) == 3
    else:
        np.testing.assert_array_equal(b_pads, np.ones(8))
        assert len(evaluators) == 1


GRID_CASES = [
    pytest.param(4, 6, (3, 3), {"pads": [1, 1, 1, 1]}, 224, id="3x3-blocked-grid"),
    pytest.param(8, 8, (3, 3), {"pads": [1, 1, 1, 1], "group": 8}, 224, id="depthwise-blocked"),
    pytest.param(8, 8, (3, 3), {"pads": [1, 1, 1, 1], "group": 8}, 20, id="depthwise-sliced"),
    pytest.param(8, 6, (1, 1), {}, 224, id="pointwise-blocked-grid"),
    pytest.param(4, 6, (3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}, 96, id="sliced-grid"),
    pytest.param(8, 6, (1, 1), {}, 64, id="pointwise-sliced-grid"),
]


@pytest.mark.parametrize(("cin", "cout", "kernel", "attrs", "size"), GRID_CASES)
def test_conv_moments_on_the_position_grid_equal_numpy(
    tmp_path: Path,
    cin: int,
    cout: int,
    kernel: tuple[int, int],
    attrs: dict[str, object],
    size: int,
) -> None:
    """Large outputs are gathered on every ``step``-th position (``position_step``), by Slice
    and one patch Conv or, from ``MIN_BLOCKED_GRID_STEP``, by depthwise convs; either way the
    moments equal numpy's im2col of the layer with its strides times ``step`` and the gate
    taken on the same grid."""
    rng = np.random.default_rng(11)
    group = int(attrs.get("group", 1))  # type: ignore[call-overload]
    weight = rng.normal(size=(cout, cin // group, *kernel)).astype(np.float32)
    x = rng.normal(size=(3, cin, size, size)).astype(np.float32)
    model = builders.conv_relu(weight, (size, size), "grid", **attrs)
    got = layer_statistics(model, {"x": x}, tmp_path, 2, hessian=True)[1]["w"]

    geometry = ConvGeometry.from_node(model.graph.node[0], weight.shape)
    (z,) = intermediates(model, {"x": x}, ["z"])
    step = position_step(z.shape[2] * z.shape[3], geometry, weight[0].size)
    assert step > 1
    on_grid = dataclasses.replace(geometry, strides=tuple(s * step for s in geometry.strides))
    gate = (z[:, :, ::step, ::step] > 0).astype(np.float32)
    want_in, want_gated = conv_moments(x, gate, on_grid, cout, hessian=True)
    assert got.inputs.count == want_in.count
    for name in ("x_sum", "x_sq_sum", "xtx"):
        np.testing.assert_allclose(
            getattr(got.inputs, name), getattr(want_in, name), rtol=1e-4, atol=1e-3, err_msg=name
        )
    assert got.gated is not None and want_gated is not None
    for name in ("g2_sum", "gx_sum", "gx_sq_sum"):
        np.testing.assert_allclose(
            getattr(got.gated, name), getattr(want_gated, name), rtol=1e-4, atol=1e-3
        )


def test_narrow_groups_are_gathered_on_the_fewest_positions() -> None:
    """A depthwise conv's problems are k x k wide whatever its channel count: it is gathered
    on about MIN_CONV_POSITIONS positions per sample, where a dense conv over as many patch
    values keeps more; both grids cover the output evenly (step per axis)."""
    positions = 112 * 112
    depthwise = ConvGeometry.from_node(
        onnx.helper.make_node(
            "Conv", ["x", "w"], ["y"], group=96, kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        (96, 1, 3, 3),
    )
    dense = dataclasses.replace(depthwise, group=1)
    narrow = position_step(positions, depthwise, 9)
    wide = position_step(positions, dense, 96 * 9)
    assert (112 // narrow) ** 2 <= 2 * MIN_CONV_POSITIONS
    assert (112 // narrow + 1) ** 2 >= MIN_CONV_POSITIONS
    assert wide < narrow
    # Wider groups (grouped convs of 8 channels, 72 columns) keep the patch-value rule.
    grouped = dataclasses.replace(depthwise, group=12)
    assert position_step(positions, grouped, 8 * 9) == position_step(positions, dense, 96 * 9)


GATHERED_CASES = [
    pytest.param(4, 6, (3, 3), {"pads": [1, 1, 1, 1]}, (9, 9), id="dense-3x3"),
    pytest.param(
        4,
        6,
        (3, 3),
        {"group": 2, "strides": [2, 2], "pads": [0, 1, 2, 0]},
        (9, 11),
        id="grouped-strided-asymmetric",
    ),
    pytest.param(4, 6, (3, 2), {"dilations": [2, 1], "pads": [2, 0, 2, 1]}, (10, 7), id="dilated"),
    pytest.param(8, 6, (1, 1), {"strides": [2, 2]}, (9, 9), id="pointwise-strided"),
    pytest.param(4, 6, (3, 3), {"pads": [1, 1, 1, 1]}, (64, 64), id="on-a-grid"),
]


@pytest.mark.parametrize(("cin", "cout", "kernel", "attrs", "size"), GATHERED_CASES)
def test_gathered_patches_equal_the_one_hot_conv_to_the_bit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cin: int,
    cout: int,
    kernel: tuple[int, int],
    attrs: dict[str, object],
    size: tuple[int, int],
) -> None:
    """A conv whose groups read several channels takes its patch values from one Gather on
    the padded input instead of the one-hot patch Conv: the same values (exact copies) in the
    same order, so every moment is bitwise the Conv path's, on every position or on a grid."""
    rng = np.random.default_rng(17)
    group = int(attrs.get("group", 1))  # type: ignore[call-overload]
    weight = rng.normal(size=(cout, cin // group, *kernel)).astype(np.float32)
    x = rng.normal(size=(5, cin, *size)).astype(np.float32)
    model = builders.conv_relu(weight, size, **attrs)
    gathered: list[str] = []
    real = conv_taps._gathered_patches

    def counted(*args: object, **kwargs: object) -> str:
        gathered.append("called")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(conv_taps, "_gathered_patches", counted)
    got = layer_statistics(model, {"x": x}, tmp_path, 2, hessian=True)[1]["w"]
    assert gathered
    monkeypatch.setattr(conv_taps, "_gathers_patches", lambda *args: False)
    want = layer_statistics(model, {"x": x}, tmp_path, 2, hessian=True, name="conv.npz")[1]["w"]
    assert len(gathered) == 1
    assert got.inputs.count == want.inputs.count
    for name in ("x_sum", "x_sq_sum", "xtx"):
        np.testing.assert_array_equal(getattr(got.inputs, name), getattr(want.inputs, name))
    assert got.gated is not None and want.gated is not None
    for name in ("g2_sum", "gx_sum", "gx_sq_sum"):
        np.testing.assert_array_equal(getattr(got.gated, name), getattr(want.gated, name))


def test_depthwise_and_input_sized_pads_keep_the_one_hot_conv() -> None:
    """The Gather replaces the one-hot Conv where that Conv multiplies (groups of several
    channels, or strides or pads on a 1x1 kernel); a depthwise conv keeps its one-hot Conv
    (as fast there), as do SAME_* pads, opsets before Range, and coarse grids (blocked)."""

    def gathers(weight: tuple[int, ...], step: int = 1, opset: int = 17, **attrs: object) -> bool:
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        geometry = ConvGeometry.from_node(node, weight)
        return conv_taps._gathers_patches(geometry, weight, step, opset)

    assert gathers((8, 4, 3, 3), pads=[1, 1, 1, 1])
    assert gathers((8, 4, 1, 1), strides=[2, 2])
    assert not gathers((8, 4, 1, 1))  # its own im2col
    assert not gathers((8, 1, 3, 3), group=8, pads=[1, 1, 1, 1])
    assert not gathers((8, 4, 3, 3), auto_pad="SAME_UPPER")
    assert not gathers((8, 4, 3, 3), opset=10)
    assert not gathers((8, 4, 3, 3), step=conv_taps.MIN_BLOCKED_GRID_STEP)
