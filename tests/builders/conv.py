"""Convolutional graphs: a BatchNorm/depthwise/pointwise CNN and one graph per channel-dependency
pattern of the structured-removal tests (residual, concat, flatten into Gemm, slice, split)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from builders.core import bias, finish, value_info, weight


def cnn_bn(seed: int = 0) -> onnx.ModelProto:
    """A small CNN with BatchNorm, a depthwise conv and a pointwise conv.

    x[batch,3,8,8] -> Conv(3->8, 3x3, pad 1, no bias) -> BatchNormalization -> Relu
                   -> Conv(8->8, 3x3, group 8, pad 1) -> Relu
                   -> Conv(8->16, 1x1) -> Relu
                   -> GlobalAveragePool -> Flatten -> Gemm(16->5, transB=1) -> y[batch,5]
    """
    rng = np.random.default_rng(seed)
    params = {
        "conv1_w": weight(rng, (8, 3, 3, 3), 3 * 9),
        "bn_scale": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "bn_bias": bias(rng, 8),
        "bn_mean": bias(rng, 8),
        "bn_var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "dw_w": weight(rng, (8, 1, 3, 3), 9),
        "dw_b": bias(rng, 8),
        "pw_w": weight(rng, (16, 8, 1, 1), 8),
        "pw_b": bias(rng, 16),
        "fc_w": weight(rng, (5, 16), 16),
        "fc_b": bias(rng, 5),
    }
    nodes = [
        helper.make_node(
            "Conv", ["x", "conv1_w"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1] * 4
        ),
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
            ["bn1"],
            name="bn1",
            epsilon=1e-5,
        ),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node(
            "Conv",
            ["r1", "dw_w", "dw_b"],
            ["c2"],
            name="dwconv",
            kernel_shape=[3, 3],
            pads=[1] * 4,
            group=8,
        ),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node(
            "Conv", ["r2", "pw_w", "pw_b"], ["c3"], name="pwconv", kernel_shape=[1, 1]
        ),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    return finish(
        "cnn_bn",
        nodes,
        [value_info("x", ["batch", 3, 8, 8])],
        [value_info("y", ["batch", 5])],
        params,
    )


def conv(
    name: str,
    source: str,
    cin: int,
    cout: int,
    params: dict[str, np.ndarray],
    rng: np.random.Generator,
    k: int = 3,
    **attrs: object,
) -> onnx.NodeProto:
    """Conv ``name``: ``source`` [cin] -> [cout], k x k, "same" padding, with bias; its weight
    ``{name}_w`` [cout, cin / group, k, k] and bias ``{name}_b`` go into ``params``."""
    group = int(attrs.get("group", 1))  # type: ignore[call-overload]
    params[f"{name}_w"] = weight(rng, (cout, cin // group, k, k), cin * k * k)
    params[f"{name}_b"] = bias(rng, cout)
    return helper.make_node(
        "Conv",
        [source, f"{name}_w", f"{name}_b"],
        [name],
        name=name,
        kernel_shape=[k, k],
        pads=[k // 2] * 4,
        **attrs,
    )


def with_relu(node: onnx.NodeProto, out: str) -> list[onnx.NodeProto]:
    """``node`` then a Relu on its output writing ``out`` (node conv_x -> relu_x)."""
    name = node.output[0]
    return [node, helper.make_node("Relu", [name], [out], name=name.replace("conv", "relu"))]


def concat_pair(params: dict[str, np.ndarray], rng: np.random.Generator) -> list[onnx.NodeProto]:
    """x -> conv_a(3->6) -> relu = ra, x -> conv_b(3->4) -> relu = rb -> Concat(axis 1) = cat
    [10 channels: conv_a's at 0, conv_b's at 6]."""
    return [
        *with_relu(conv("conv_a", "x", 3, 6, params, rng), "ra"),
        *with_relu(conv("conv_b", "x", 3, 4, params, rng), "rb"),
        helper.make_node("Concat", ["ra", "rb"], ["cat"], name="concat", axis=1),
    ]


def classifier_head(
    nodes: list[onnx.NodeProto],
    params: dict[str, np.ndarray],
    rng: np.random.Generator,
    source: str,
    channels: int,
    classes: int = 3,
) -> None:
    """GlobalAveragePool -> Flatten -> Gemm(transB) -> y."""
    params["fc_w"] = weight(rng, (classes, channels), channels)
    params["fc_b"] = bias(rng, classes)
    nodes += [
        helper.make_node("GlobalAveragePool", [source], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]


def image_model(
    name: str, nodes: list[onnx.NodeProto], params: dict[str, np.ndarray], classes: int = 3
) -> onnx.ModelProto:
    """x[batch,3,8,8] -> ``nodes`` -> y[batch,classes]."""
    return finish(
        name,
        nodes,
        [value_info("x", ["batch", 3, 8, 8])],
        [value_info("y", ["batch", classes])],
        params,
    )


def residual_cnn(seed: int = 0) -> onnx.ModelProto:
    """x -> conv_a(3->8) -> relu = r1 -> conv_b(8->8) -> relu -> conv_c(8->8) = c
    Add(r1, c) -> relu -> conv_d(8->6) -> relu -> GAP -> Flatten -> Gemm(6->3)
    conv_a and conv_c write one residual stream: they lose the same channels."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    nodes = [
        *with_relu(conv("conv_a", "x", 3, 8, params, rng), "r1"),
        *with_relu(conv("conv_b", "r1", 8, 8, params, rng), "rb"),
        conv("conv_c", "rb", 8, 8, params, rng),
        helper.make_node("Add", ["r1", "conv_c"], ["sum"], name="residual"),
        helper.make_node("Relu", ["sum"], ["rs"], name="relu_s"),
        *with_relu(conv("conv_d", "rs", 8, 6, params, rng, k=1), "rd"),
    ]
    classifier_head(nodes, params, rng, "rd", 6)
    return image_model("residual_cnn", nodes, params)


def concat_cnn(seed: int = 0) -> onnx.ModelProto:
    """x -> conv_a(3->6) -> relu -+
       x -> conv_b(3->4) -> relu -+-> Concat(axis 1) [10] -> conv_c(10->8) -> relu -> head
    conv_c reads conv_a's channels at offset 0 and conv_b's at offset 6."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    nodes = [
        *concat_pair(params, rng),
        *with_relu(conv("conv_c", "cat", 10, 8, params, rng, k=1), "rc"),
    ]
    classifier_head(nodes, params, rng, "rc", 8)
    return image_model("concat_cnn", nodes, params)


def flatten_gemm_cnn(seed: int = 0) -> onnx.ModelProto:
    """x -> conv(3->6) -> BatchNorm -> relu -> MaxPool 2x2 [6,4,4] -> Flatten [96]
    -> Gemm(96->10) -> relu -> Gemm(10->3): channel c of the conv owns rows c*16..c*16+15."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {
        "bn_scale": rng.uniform(0.5, 1.5, 6).astype(np.float32),
        "bn_bias": bias(rng, 6),
        "bn_mean": bias(rng, 6),
        "bn_var": rng.uniform(0.5, 1.5, 6).astype(np.float32),
        "fc1_w": weight(rng, (96, 10), 96),
        "fc1_b": bias(rng, 10),
        "fc2_w": weight(rng, (3, 10), 10),
        "fc2_b": bias(rng, 3),
    }
    nodes = [
        conv("conv", "x", 3, 6, params, rng),
        helper.make_node(
            "BatchNormalization",
            ["conv", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
            ["bn"],
            name="bn",
        ),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node(
            "MaxPool", ["r"], ["p"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Flatten", ["p"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc1_w", "fc1_b"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu_h"),
        helper.make_node("Gemm", ["hr", "fc2_w", "fc2_b"], ["y"], name="fc2", transB=1),
    ]
    return image_model("flatten_gemm_cnn", nodes, params)


def sliced_concat_cnn(chunk: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x -> conv_a(3->6) -> relu -+
       x -> conv_b(3->4) -> relu -+-> Concat [10] -+-> Slice [6:10] -> conv_c(4->4) -> relu -+
                                                   +-> conv_d(10->4) -> relu ----------------+
       Add -> head. The Slice reads conv_b's channels only (conv_a's lie before its start).
    ``chunk=True`` slices [0:5] instead, cutting through conv_a's channels (a YOLO-style chunk):
    that group must freeze."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {
        "starts": np.array([0 if chunk else 6], np.int64),
        "ends": np.array([5 if chunk else 10], np.int64),
        "axes": np.array([1], np.int64),
    }
    width = 5 if chunk else 4
    nodes = [
        *concat_pair(params, rng),
        helper.make_node("Slice", ["cat", "starts", "ends", "axes"], ["part"], name="slice"),
        *with_relu(conv("conv_c", "part", width, 4, params, rng), "rc"),
        *with_relu(conv("conv_d", "cat", 10, 4, params, rng, k=1), "rd"),
        helper.make_node("Add", ["rc", "rd"], ["sum"], name="sum"),
    ]
    classifier_head(nodes, params, rng, "sum", 4)
    return image_model("sliced_concat_cnn", nodes, params)


def split_cnn(seed: int = 0) -> onnx.ModelProto:
    """x -> conv_a(3->6) -> relu -+
    x -> conv_b(3->4) -> relu -+-> Concat [10] -> Split [6, 4] -+-> conv_c(6->4) -> relu -+
                                                                +-> conv_d(4->4) -> relu -+
    Add -> head. Both groups shrink the one Split sizes constant, each its own entry."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {"sizes": np.array([6, 4], np.int64)}
    nodes = [
        *concat_pair(params, rng),
        helper.make_node("Split", ["cat", "sizes"], ["part_a", "part_b"], name="split", axis=1),
        *with_relu(conv("conv_c", "part_a", 6, 4, params, rng, k=1), "rc"),
        *with_relu(conv("conv_d", "part_b", 4, 4, params, rng, k=1), "rd"),
        helper.make_node("Add", ["rc", "rd"], ["sum"], name="sum"),
    ]
    classifier_head(nodes, params, rng, "sum", 4)
    return image_model("split_cnn", nodes, params)


def conv_relu(
    w: np.ndarray,
    spatial: Sequence[int],
    name: str = "conv",
    pad: Sequence[int] | None = None,
    pad_value: float = 0.0,
    **attrs: object,
) -> onnx.ModelProto:
    """x [n, cin, *spatial] -> Conv(w [cout, cin / group, *kernel], no bias, ``attrs``) = z
    -> Relu -> y (rank left unknown, so not full-checked); the nodes are unnamed.

    ``pad`` (begin_h, begin_w, end_h, end_w): a constant Pad node (initializers ``pads`` and
    ``value`` = ``pad_value``) before the Conv, which then reads ``xp``.
    """
    group = int(attrs.get("group", 1))  # type: ignore[call-overload]
    params = {"w": w}
    nodes = []
    source = "x"
    if pad is not None:
        params["pads"] = np.array([0, 0, pad[0], pad[1], 0, 0, pad[2], pad[3]], np.int64)
        params["value"] = np.array(pad_value, np.float32)
        nodes.append(helper.make_node("Pad", ["x", "pads", "value"], ["xp"], mode="constant"))
        source = "xp"
    nodes += [
        helper.make_node("Conv", [source, "w"], ["z"], **attrs),
        helper.make_node("Relu", ["z"], ["y"]),
    ]
    return finish(
        name,
        nodes,
        [value_info("x", ["n", w.shape[1] * group, *spatial])],
        [value_info("y", None)],
        params,
        producer="",
        check=False,  # the full checker wants every output's shape
    )
