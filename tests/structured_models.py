"""Graphs for the structured-removal tests: one per dependency pattern (see test_structured.py).

Built like ``models.py`` (opset 17, dynamic batch, seeded ``normal / sqrt(fan_in)`` weights,
full-checked on construction).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from models import FLOAT, LayerBuilder, _bias, _finish, _scalar, _weight
from onnx import helper


def _conv(name: str, source: str, cin: int, cout: int, params: dict, rng, k: int = 3, **kw):  # type: ignore[no-untyped-def]
    params[f"{name}_w"] = _weight(rng, (cout, cin // kw.get("group", 1), k, k), cin * k * k)
    params[f"{name}_b"] = _bias(rng, cout)
    return helper.make_node(
        "Conv",
        [source, f"{name}_w", f"{name}_b"],
        [name],
        name=name,
        kernel_shape=[k, k],
        pads=[k // 2] * 4,
        **kw,
    )


def _head(nodes: list, params: dict, rng, source: str, channels: int, classes: int = 3) -> None:  # type: ignore[type-arg, no-untyped-def]
    """GlobalAveragePool -> Flatten -> Gemm(transB) -> y."""
    params["fc_w"] = _weight(rng, (classes, channels), channels)
    params["fc_b"] = _bias(rng, classes)
    nodes += [
        helper.make_node("GlobalAveragePool", [source], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]


def _image_model(name: str, nodes: list, params: dict, classes: int = 3) -> onnx.ModelProto:  # type: ignore[type-arg]
    return _finish(
        name,
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", classes])],
        params,
    )


def residual_cnn(seed: int = 0) -> onnx.ModelProto:
    """x -> conv_a(3->8) -> relu = r1 -> conv_b(8->8) -> relu -> conv_c(8->8) = c
    Add(r1, c) -> relu -> conv_d(8->6) -> relu -> GAP -> Flatten -> Gemm(6->3)
    conv_a and conv_c write one residual stream: they lose the same channels."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    nodes = [
        _conv("conv_a", "x", 3, 8, params, rng),
        helper.make_node("Relu", ["conv_a"], ["r1"], name="relu_a"),
        _conv("conv_b", "r1", 8, 8, params, rng),
        helper.make_node("Relu", ["conv_b"], ["rb"], name="relu_b"),
        _conv("conv_c", "rb", 8, 8, params, rng),
        helper.make_node("Add", ["r1", "conv_c"], ["sum"], name="residual"),
        helper.make_node("Relu", ["sum"], ["rs"], name="relu_s"),
        _conv("conv_d", "rs", 8, 6, params, rng, k=1),
        helper.make_node("Relu", ["conv_d"], ["rd"], name="relu_d"),
    ]
    _head(nodes, params, rng, "rd", 6)
    return _image_model("residual_cnn", nodes, params)


def concat_cnn(seed: int = 0) -> onnx.ModelProto:
    """x -> conv_a(3->6) -> relu -+
       x -> conv_b(3->4) -> relu -+-> Concat(axis 1) [10] -> conv_c(10->8) -> relu -> head
    conv_c reads conv_a's channels at offset 0 and conv_b's at offset 6."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    nodes = [
        _conv("conv_a", "x", 3, 6, params, rng),
        helper.make_node("Relu", ["conv_a"], ["ra"], name="relu_a"),
        _conv("conv_b", "x", 3, 4, params, rng),
        helper.make_node("Relu", ["conv_b"], ["rb"], name="relu_b"),
        helper.make_node("Concat", ["ra", "rb"], ["cat"], name="concat", axis=1),
        _conv("conv_c", "cat", 10, 8, params, rng, k=1),
        helper.make_node("Relu", ["conv_c"], ["rc"], name="relu_c"),
    ]
    _head(nodes, params, rng, "rc", 8)
    return _image_model("concat_cnn", nodes, params)


def flatten_gemm_cnn(seed: int = 0) -> onnx.ModelProto:
    """x -> conv(3->6) -> BatchNorm -> relu -> MaxPool 2x2 [6,4,4] -> Flatten [96]
    -> Gemm(96->10) -> relu -> Gemm(10->3): channel c of the conv owns rows c*16..c*16+15."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {
        "bn_scale": rng.uniform(0.5, 1.5, 6).astype(np.float32),
        "bn_bias": _bias(rng, 6),
        "bn_mean": _bias(rng, 6),
        "bn_var": rng.uniform(0.5, 1.5, 6).astype(np.float32),
        "fc1_w": _weight(rng, (96, 10), 96),
        "fc1_b": _bias(rng, 10),
        "fc2_w": _weight(rng, (3, 10), 10),
        "fc2_b": _bias(rng, 3),
    }
    nodes = [
        _conv("conv", "x", 3, 6, params, rng),
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
    return _image_model("flatten_gemm_cnn", nodes, params)


def encoder_layer(
    hidden: int = 32, heads: int = 4, ffn: int = 64, seed: int = 0
) -> onnx.ModelProto:
    """A BERT-style encoder layer as PyTorch exports it: multi-head attention whose Reshape
    targets are built at run time from Shape/Gather pieces and constant head counts, an additive
    attention mask, erf GELU, post-LayerNorm residuals.

    x[batch,seq,H], attention_mask[batch,seq] ->
      q/k/v = x @ W + b -> Reshape [b, s, heads, d] (Concat(b, s, [heads], [d]))
      q: Transpose(0,2,1,3); k: Transpose(0,2,3,1); v: Transpose(0,2,1,3)
      scores = q @ k / sqrt(d) + (1 - mask) * -10000 [b,1,1,s] -> Softmax -> @ v
      -> Transpose(0,2,1,3) -> Reshape [b, s, H] (Concat(b, s, [H])) -> @ Wo + bo
      -> Add x -> LayerNorm -> FFN (erf GELU) -> Add -> LayerNorm -> y[batch,seq,H]
    """
    rng = np.random.default_rng(seed)
    head_dim = hidden // heads
    params: dict[str, np.ndarray] = {
        "axis0": np.array([0], np.int64),
        "axis1": np.array([1], np.int64),
        "idx0": np.array(0, np.int64),
        "idx1": np.array(1, np.int64),
        "heads_dims": np.array([heads, head_dim], np.int64),
        "hidden_dim": np.array([hidden], np.int64),
        "mask_axes": np.array([1, 2], np.int64),
        "one": _scalar(1.0),
        "neg": _scalar(-10000.0),
        "scale": _scalar(math.sqrt(head_dim)),
        "sqrt2": _scalar(1.4142135),
        "half": _scalar(0.5),
    }
    nodes: list[onnx.NodeProto] = [
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Gather", ["x_shape", "idx0"], ["b"], name="gather_b", axis=0),
        helper.make_node("Gather", ["x_shape", "idx1"], ["s"], name="gather_s", axis=0),
        helper.make_node("Unsqueeze", ["b", "axis0"], ["b1"], name="unsq_b"),
        helper.make_node("Unsqueeze", ["s", "axis0"], ["s1"], name="unsq_s"),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], name="mask_cast", to=FLOAT),
        helper.make_node("Sub", ["one", "mask_f"], ["mask_inv"], name="mask_inv"),
        helper.make_node("Mul", ["mask_inv", "neg"], ["mask_neg"], name="mask_neg"),
        helper.make_node("Unsqueeze", ["mask_neg", "mask_axes"], ["mask_bias"], name="mask_unsq"),
    ]

    build = LayerBuilder(rng)
    build.params, build.nodes = params, nodes  # the builder appends to this model's lists

    def linear(name: str, source: str, fan_in: int, fan_out: int) -> str:
        return build.linear(name, source, fan_in, fan_out, bias_first=True)

    def split_heads(name: str, perm: list[int]) -> str:
        nodes.append(
            helper.make_node(
                "Concat", ["b1", "s1", "heads_dims"], [f"{name}_shape"], name=f"{name}_cat", axis=0
            )
        )
        nodes.append(
            helper.make_node(
                "Reshape", [name, f"{name}_shape"], [f"{name}_4d"], name=f"{name}_reshape"
            )
        )
        nodes.append(
            helper.make_node(
                "Transpose", [f"{name}_4d"], [f"{name}_t"], name=f"{name}_transpose", perm=perm
            )
        )
        return f"{name}_t"

    def layer_norm(name: str, source: str, out: str) -> None:
        build.layer_norm(name, source, out, hidden)

    q = split_heads(linear("query", "x", hidden, hidden), [0, 2, 1, 3])
    k = split_heads(linear("key", "x", hidden, hidden), [0, 2, 3, 1])
    v = split_heads(linear("value", "x", hidden, hidden), [0, 2, 1, 3])
    nodes += [
        helper.make_node("MatMul", [q, k], ["scores"], name="scores"),
        helper.make_node("Div", ["scores", "scale"], ["scaled"], name="scale_div"),
        helper.make_node("Add", ["scaled", "mask_bias"], ["masked"], name="mask_add"),
        helper.make_node("Softmax", ["masked"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", v], ["context"], name="context"),
        helper.make_node(
            "Transpose", ["context"], ["context_t"], name="context_transpose", perm=[0, 2, 1, 3]
        ),
        helper.make_node(
            "Concat", ["b1", "s1", "hidden_dim"], ["merge_shape"], name="merge_cat", axis=0
        ),
        helper.make_node("Reshape", ["context_t", "merge_shape"], ["merged"], name="merge_reshape"),
    ]
    out = linear("attn_out", "merged", hidden, hidden)
    nodes.append(helper.make_node("Add", [out, "x"], ["res1"], name="residual1"))
    layer_norm("ln1", "res1", "ln1_out")
    h = linear("intermediate", "ln1_out", hidden, ffn)
    gelu = build.erf_gelu(h)
    f = linear("ffn_out", gelu, ffn, hidden)
    nodes.append(helper.make_node("Add", [f, "ln1_out"], ["res2"], name="residual2"))
    layer_norm("ln2", "res2", "y")
    return _finish(
        "encoder_layer",
        nodes,
        [
            helper.make_tensor_value_info("x", FLOAT, ["batch", "seq", hidden]),
            helper.make_tensor_value_info(
                "attention_mask", onnx.TensorProto.INT64, ["batch", "seq"]
            ),
        ],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", "seq", hidden])],
        params,
    )


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
        _conv("conv_a", "x", 3, 6, params, rng),
        helper.make_node("Relu", ["conv_a"], ["ra"], name="relu_a"),
        _conv("conv_b", "x", 3, 4, params, rng),
        helper.make_node("Relu", ["conv_b"], ["rb"], name="relu_b"),
        helper.make_node("Concat", ["ra", "rb"], ["cat"], name="concat", axis=1),
        helper.make_node("Slice", ["cat", "starts", "ends", "axes"], ["part"], name="slice"),
        _conv("conv_c", "part", width, 4, params, rng),
        helper.make_node("Relu", ["conv_c"], ["rc"], name="relu_c"),
        _conv("conv_d", "cat", 10, 4, params, rng, k=1),
        helper.make_node("Relu", ["conv_d"], ["rd"], name="relu_d"),
        helper.make_node("Add", ["rc", "rd"], ["sum"], name="sum"),
    ]
    _head(nodes, params, rng, "sum", 4)
    return _image_model("sliced_concat_cnn", nodes, params)


def split_cnn(seed: int = 0) -> onnx.ModelProto:
    """x -> conv_a(3->6) -> relu -+
    x -> conv_b(3->4) -> relu -+-> Concat [10] -> Split [6, 4] -+-> conv_c(6->4) -> relu -+
                                                                +-> conv_d(4->4) -> relu -+
    Add -> head. Both groups shrink the one Split sizes constant, each its own entry."""
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {"sizes": np.array([6, 4], np.int64)}
    nodes = [
        _conv("conv_a", "x", 3, 6, params, rng),
        helper.make_node("Relu", ["conv_a"], ["ra"], name="relu_a"),
        _conv("conv_b", "x", 3, 4, params, rng),
        helper.make_node("Relu", ["conv_b"], ["rb"], name="relu_b"),
        helper.make_node("Concat", ["ra", "rb"], ["cat"], name="concat", axis=1),
        helper.make_node("Split", ["cat", "sizes"], ["part_a", "part_b"], name="split", axis=1),
        _conv("conv_c", "part_a", 6, 4, params, rng, k=1),
        helper.make_node("Relu", ["conv_c"], ["rc"], name="relu_c"),
        _conv("conv_d", "part_b", 4, 4, params, rng, k=1),
        helper.make_node("Relu", ["conv_d"], ["rd"], name="relu_d"),
        helper.make_node("Add", ["rc", "rd"], ["sum"], name="sum"),
    ]
    _head(nodes, params, rng, "sum", 4)
    return _image_model("split_cnn", nodes, params)
