"""Dense (fully connected) graphs: MatMul/Gemm chains, shared and Constant-node weights, fp16."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from builders.core import (
    FLOAT,
    FLOAT16,
    INT64,
    bias,
    finish,
    scalar,
    value_info,
    vector_model,
    weight,
)


def matmul_chain(
    sizes: Sequence[int],
    rng: np.random.Generator,
    nodes: list[onnx.NodeProto],
    params: dict[str, np.ndarray],
    source: str,
    dtype: type = np.float32,
) -> str:
    """``source`` -> (MatMul W_i[in, out] -> Add b_i -> Relu)* with no Relu after the last."""
    last = len(sizes) - 2
    current = source
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        params[f"W{i}"] = weight(rng, (fan_in, fan_out), fan_in).astype(dtype)
        params[f"b{i}"] = bias(rng, fan_out).astype(dtype)
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"mm{i}"], name=f"fc{i}"))
        out = "y" if i == last else f"z{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [out], name=f"fc{i}_bias"))
        if i != last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"], name=f"relu{i}"))
            current = f"h{i}"
    return "y"


def mlp_gemm(sizes: Sequence[int] = (16, 32, 32, 4), seed: int = 0) -> onnx.ModelProto:
    """Gemm(transB=1) + Relu layers; the last Gemm has no activation.

    x[batch,16] -> Gemm(W0[32,16], b0) -> Relu -> Gemm(W1[32,32], b1) -> Relu
                -> Gemm(W2[4,32], b2) -> y[batch,4]
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    params: dict[str, np.ndarray] = {}
    current, last = "x", len(sizes) - 2
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        params[f"W{i}"] = weight(rng, (fan_out, fan_in), fan_in)
        params[f"b{i}"] = bias(rng, fan_out)
        out = "y" if i == last else f"z{i}"
        nodes.append(
            helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [out], name=f"gemm{i}", transB=1)
        )
        if i != last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"], name=f"relu{i}"))
            current = f"h{i}"
    return vector_model("mlp_gemm", nodes, params, sizes[0], sizes[-1])


def mlp_matmul(sizes: Sequence[int] = (16, 32, 32, 4), seed: int = 0) -> onnx.ModelProto:
    """MatMul + Add(bias) + Relu layers, weights stored [in, out]; no Relu after the last.

    x[batch,16] -> MatMul(W0[16,32]) -> Add(b0) -> Relu -> MatMul(W1[32,32]) -> Add(b1)
                -> Relu -> MatMul(W2[32,4]) -> Add(b2) -> y[batch,4]
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    params: dict[str, np.ndarray] = {}
    matmul_chain(sizes, rng, nodes, params, "x")
    return vector_model("mlp_matmul", nodes, params, sizes[0], sizes[-1])


def quiet_branch(
    width: int = 64, outputs: int = 16, scale: float = 0.01, seed: int = 0
) -> onnx.ModelProto:
    """Two layers of the same shape whose outputs are summed, one of them scaled down: pruning
    ``B`` alone hurts the output ``1 / scale`` times less than pruning ``A`` alone.

    x[batch,width] -> MatMul(A[width,outputs]) ----------------------> Add -> y[batch,outputs]
                   -> MatMul(B[width,outputs]) -> Mul(scale) --------/
    """
    rng = np.random.default_rng(seed)
    params = {
        "A": weight(rng, (width, outputs), width),
        "B": weight(rng, (width, outputs), width),
        "scale": scalar(scale),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["za"], name="loud"),
        helper.make_node("MatMul", ["x", "B"], ["zb"], name="quiet"),
        helper.make_node("Mul", ["zb", "scale"], ["zq"], name="scale_quiet"),
        helper.make_node("Add", ["za", "zq"], ["y"], name="sum"),
    ]
    return vector_model("quiet_branch", nodes, params, width, outputs)


def constant_node_mlp(sizes: Sequence[int] = (16, 32, 32, 4), seed: int = 0) -> onnx.ModelProto:
    """``mlp_matmul`` with every weight and bias in a Constant node (no initializers).

    Constant W0, b0, W1, b1, W2, b2;
    x[batch,16] -> MatMul(W0) -> Add(b0) -> Relu -> MatMul(W1) -> Add(b1) -> Relu
                -> MatMul(W2) -> Add(b2) -> y[batch,4]
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    params: dict[str, np.ndarray] = {}
    matmul_chain(sizes, rng, nodes, params, "x")
    constants = [
        helper.make_node(
            "Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(v, name)
        )
        for name, v in params.items()
    ]
    return vector_model("constant_node_mlp", constants + nodes, {}, sizes[0], sizes[-1])


def shared_weight_mlp(width: int = 16, outputs: int = 4, seed: int = 0) -> onnx.ModelProto:
    """One square MatMul weight ``W_shared`` read by two MatMul nodes.

    x[batch,16] -> MatMul(W_shared) -> Add(b0) -> Relu -> MatMul(W_shared) -> Add(b1) -> Relu
                -> MatMul(W_out[16,4]) -> Add(b2) -> y[batch,4]
    """
    rng = np.random.default_rng(seed)
    params = {
        "W_shared": weight(rng, (width, width), width),
        "b0": bias(rng, width),
        "b1": bias(rng, width),
        "W_out": weight(rng, (width, outputs), width),
        "b2": bias(rng, outputs),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W_shared"], ["mm0"], name="shared0"),
        helper.make_node("Add", ["mm0", "b0"], ["z0"], name="shared0_bias"),
        helper.make_node("Relu", ["z0"], ["h0"], name="relu0"),
        helper.make_node("MatMul", ["h0", "W_shared"], ["mm1"], name="shared1"),
        helper.make_node("Add", ["mm1", "b1"], ["z1"], name="shared1_bias"),
        helper.make_node("Relu", ["z1"], ["h1"], name="relu1"),
        helper.make_node("MatMul", ["h1", "W_out"], ["mm2"], name="out"),
        helper.make_node("Add", ["mm2", "b2"], ["y"], name="out_bias"),
    ]
    return vector_model("shared_weight_mlp", nodes, params, width, outputs)


def no_prunable(width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Nothing onnxprune can prune: x[batch,16] -> Relu -> Add(c[16]) -> y[batch,16]."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "c"], ["y"], name="shift"),
    ]
    return vector_model("no_prunable", nodes, {"c": bias(rng, width)}, width, width)


def fp16_mlp(sizes: Sequence[int] = (16, 32, 32, 4), seed: int = 0) -> onnx.ModelProto:
    """``mlp_matmul`` entirely in float16 (input, weights, biases, output).

    x:f16[batch,16] -> MatMul(W0:f16) -> Add(b0) -> Relu -> MatMul(W1) -> Add(b1) -> Relu
                    -> MatMul(W2) -> Add(b2) -> y:f16[batch,4]
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    params: dict[str, np.ndarray] = {}
    matmul_chain(sizes, rng, nodes, params, "x", dtype=np.float16)
    return vector_model("fp16_mlp", nodes, params, sizes[0], sizes[-1], FLOAT16)


def masked_sequence_mlp(hidden: int | None = None, seed: int = 0) -> onnx.ModelProto:
    """Token inputs with a padding mask the graph reads (unnamed nodes, unscaled normal
    weights).

    hidden None: x [batch, seq, 8] -> MatMul(w [8, 4]) -> y [batch, seq, 4]
    hidden 6:    x -> MatMul(w1 [8, 6]) = z -> Relu = h -> MatMul(w2 [6, 4]) -> y
    both: attention_mask [batch, seq] int64 -> Cast -> mask_f (an output, so the graph reads
    the mask)
    """
    rng = np.random.default_rng(seed)
    if hidden is None:
        name = "masked"
        params = {"w": rng.normal(size=(8, 4)).astype(np.float32)}
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    else:
        name = "masked2"
        params = {
            "w1": rng.normal(size=(8, hidden)).astype(np.float32),
            "w2": rng.normal(size=(hidden, 4)).astype(np.float32),
        }
        nodes = [
            helper.make_node("MatMul", ["x", "w1"], ["z"]),
            helper.make_node("Relu", ["z"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["y"]),
        ]
    nodes.append(helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=FLOAT))
    return finish(
        name,
        nodes,
        [
            value_info("x", ["batch", "seq", 8]),
            value_info("attention_mask", ["batch", "seq"], INT64),
        ],
        [value_info("y", ["batch", "seq", 4]), value_info("mask_f", ["batch", "seq"])],
        params,
        producer="",
    )
