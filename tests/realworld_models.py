"""Graphs the way real exporters and quantizers write them, built with ``onnx.helper``.

Weights behind Transpose / Cast (bf16 storage), QDQ and QLinear quantised layers, If / Loop
subgraphs with outer-scope weights, several inputs and outputs with dynamic batch and sequence
dims, optional (empty-name) inputs, initializers also listed as graph inputs, and one model per
opset. Every builder checks its model with the full ONNX checker.
"""

from __future__ import annotations

import math

import ml_dtypes  # installed with onnx: numpy_helper's bfloat16
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
# The newest opset the installed onnx knows, and the IR version onnxruntime needs for it.
NEWEST_OPSET = onnx.defs.onnx_opset_version()
IR_FOR_OPSET = {11: 6, 13: 7, 17: 8, 18: 8, 21: 10}


def ir_version_for(opset: int) -> int:
    return IR_FOR_OPSET.get(opset) or helper.find_min_ir_version_for(
        [helper.make_opsetid("", opset)]
    )


def _w(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)


def _b(rng: np.random.Generator, size: int) -> np.ndarray:
    return (0.1 * rng.standard_normal(size)).astype(np.float32)


def _model(
    name: str,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=ir_version_for(opset),
        producer_name="onnxprune-tests",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _tensors(params: dict[str, np.ndarray]) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(v, k) for k, v in params.items()]


def _vi(name: str, shape: list[int | str], elem: int = FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def viewed_weights(seed: int = 0) -> onnx.ModelProto:
    """Weights reached through Transpose / Cast, as exporters write them.

    x[batch,16] -> MatMul(Transpose(Wt[32,16]) = W0) -> Add b0 -> Relu
                -> MatMul(Transpose(Cast<float>(W1:bf16[32,32])) = W1t) -> Add b1 -> Relu
                -> Gemm(h, Cast<float>(W2:f16[4,32]) = W2f, b2, transB=1) = y[batch,4]
    """
    rng = np.random.default_rng(seed)
    params = {
        "Wt": _w(rng, (32, 16), 16),
        "b0": _b(rng, 32),
        "W1": _w(rng, (32, 32), 32).astype(ml_dtypes.bfloat16),
        "b1": _b(rng, 32),
        "W2": _w(rng, (4, 32), 32).astype(np.float16),
        "b2": _b(rng, 4),
    }
    nodes = [
        helper.make_node("Transpose", ["Wt"], ["W0"], name="t0", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "W0"], ["m0"], name="fc0"),
        helper.make_node("Add", ["m0", "b0"], ["z0"], name="fc0_bias"),
        helper.make_node("Relu", ["z0"], ["h0"], name="relu0"),
        helper.make_node("Cast", ["W1"], ["W1f"], name="cast1", to=FLOAT),
        helper.make_node("Transpose", ["W1f"], ["W1t"], name="t1"),  # default perm: [1, 0]
        helper.make_node("MatMul", ["h0", "W1t"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["z1"], name="fc1_bias"),
        helper.make_node("Relu", ["z1"], ["h1"], name="relu1"),
        helper.make_node("Cast", ["W2"], ["W2f"], name="cast2", to=FLOAT),
        helper.make_node("Gemm", ["h1", "W2f", "b2"], ["y"], name="fc2", transB=1),
    ]
    return _model(
        "viewed_weights", nodes, [_vi("x", ["batch", 16])], [_vi("y", ["batch", 4])],
        _tensors(params),
    )  # fmt: skip


def shared_view(seed: int = 0) -> onnx.ModelProto:
    """Views that must not be pruned: the stored constant or the view's output has another
    reader.

    x[batch,8] -> MatMul(Transpose(A)) -> Relu -> MatMul(Transpose(A)^T ... ) chain:
      A[8,8] is read by Transpose ta and by Add (so A is not private);
      Transpose(B) output Bt is read by MatMul and by Add (so the view is not private);
      C[8,8] is read by Reshape (not a supported view).
    """
    rng = np.random.default_rng(seed)
    params = {"A": _w(rng, (8, 8), 8), "B": _w(rng, (8, 8), 8), "C": _w(rng, (8, 8), 8)}
    params["shape"] = np.array([8, 8], dtype=np.int64)
    nodes = [
        helper.make_node("Transpose", ["A"], ["At"], name="ta", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "At"], ["m0"], name="fa"),
        helper.make_node("Add", ["m0", "A"], ["h0"], name="add_a"),
        helper.make_node("Transpose", ["B"], ["Bt"], name="tb", perm=[1, 0]),
        helper.make_node("MatMul", ["h0", "Bt"], ["m1"], name="fb"),
        helper.make_node("Add", ["m1", "Bt"], ["h1"], name="add_b"),
        helper.make_node("Reshape", ["C", "shape"], ["Cr"], name="rc"),
        helper.make_node("MatMul", ["h1", "Cr"], ["y"], name="fc"),
    ]
    return _model("shared_view", nodes, [_vi("x", [8, 8])], [_vi("y", [8, 8])], _tensors(params))


def bf16_matmul(seed: int = 0) -> onnx.ModelProto:
    """x:bf16[batch,8] -> MatMul(W:bf16[8,4]) -> y:bf16 (onnxruntime has no CPU kernel)."""
    rng = np.random.default_rng(seed)
    w = _w(rng, (8, 4), 8).astype(ml_dtypes.bfloat16)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")]
    bf16 = TensorProto.BFLOAT16
    return _model(
        "bf16", nodes, [_vi("x", ["batch", 8], bf16)], [_vi("y", ["batch", 4], bf16)],
        _tensors({"W": w}),
    )  # fmt: skip


def _quantize(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 (scale per index of ``axis``)."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=reduce) / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def qdq_mlp(seed: int = 0) -> onnx.ModelProto:
    """A QDQ model as ORT's quantizer writes it, with one float layer left.

    x[batch,16] -> Q -> DQ -> MatMul(DQ(W0q:int8[16,32], per-channel)) -> Add b0 -> Relu
                -> Q -> DQ -> MatMul(DQ(Q(W1:f32[32,32]))) -> Add b1 -> Relu
                -> Gemm(W2:f32[4,32], b2, transB=1) = y[batch,4]   (float: prunable)
    """
    rng = np.random.default_rng(seed)
    w0 = _w(rng, (16, 32), 16)
    w0q, w0s = _quantize(w0, axis=1)
    w1 = _w(rng, (32, 32), 32)
    _, w1s = _quantize(w1, axis=1)
    params = {
        "x_scale": np.array(0.05, dtype=np.float32),
        "x_zp": np.array(0, dtype=np.int8),
        "h_scale": np.array(0.03, dtype=np.float32),
        "h_zp": np.array(0, dtype=np.int8),
        "W0q": w0q,
        "W0s": w0s,
        "W0zp": np.zeros(32, dtype=np.int8),
        "b0": _b(rng, 32),
        "W1": w1,
        "W1s": w1s,
        "W1zp": np.zeros(32, dtype=np.int8),
        "b1": _b(rng, 32),
        "W2": _w(rng, (4, 32), 32),
        "b2": _b(rng, 4),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="qx"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="dqx"),
        helper.make_node("DequantizeLinear", ["W0q", "W0s", "W0zp"], ["W0"], name="dqw0", axis=1),
        helper.make_node("MatMul", ["xd", "W0"], ["m0"], name="fc0"),
        helper.make_node("Add", ["m0", "b0"], ["z0"], name="fc0_bias"),
        helper.make_node("Relu", ["z0"], ["h0"], name="relu0"),
        helper.make_node("QuantizeLinear", ["h0", "h_scale", "h_zp"], ["hq"], name="qh"),
        helper.make_node("DequantizeLinear", ["hq", "h_scale", "h_zp"], ["hd"], name="dqh"),
        helper.make_node("QuantizeLinear", ["W1", "W1s", "W1zp"], ["W1q"], name="qw1", axis=1),
        helper.make_node("DequantizeLinear", ["W1q", "W1s", "W1zp"], ["W1d"], name="dqw1", axis=1),
        helper.make_node("MatMul", ["hd", "W1d"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "b1"], ["z1"], name="fc1_bias"),
        helper.make_node("Relu", ["z1"], ["h1"], name="relu1"),
        helper.make_node("Gemm", ["h1", "W2", "b2"], ["y"], name="fc2", transB=1),
    ]
    return _model(
        "qdq_mlp", nodes, [_vi("x", ["batch", 16])], [_vi("y", ["batch", 4])], _tensors(params)
    )


def qlinear_mlp(seed: int = 0) -> onnx.ModelProto:
    """QOperator format: QLinearMatMul and MatMulInteger on int8 weights, one float Gemm.

    x[batch,16] -> QuantizeLinear -> QLinearMatMul(W0q) -> DequantizeLinear -> Relu
                -> DynamicQuantizeLinear -> MatMulInteger(W1q:uint8) -> Cast -> Mul scale
                -> Gemm(W2:f32[4,32], b2, transB=1) = y[batch,4]
    """
    rng = np.random.default_rng(seed)
    w0q, _ = _quantize(_w(rng, (16, 32), 16), axis=1)
    params = {
        "x_scale": np.array(0.05, dtype=np.float32),
        "x_zp": np.array(0, dtype=np.int8),
        "W0q": w0q,
        "W0s": np.array(0.01, dtype=np.float32),
        "W0zp": np.array(0, dtype=np.int8),
        "y0_scale": np.array(0.05, dtype=np.float32),
        "y0_zp": np.array(0, dtype=np.int8),
        "W1q": rng.integers(0, 255, (32, 32)).astype(np.uint8),
        "W1zp": np.array(128, dtype=np.uint8),
        "W1s": np.array(0.002, dtype=np.float32),
        "W2": _w(rng, (4, 32), 32),
        "b2": _b(rng, 4),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="qx"),
        helper.make_node(
            "QLinearMatMul",
            ["xq", "x_scale", "x_zp", "W0q", "W0s", "W0zp", "y0_scale", "y0_zp"],
            ["y0q"],
            name="qfc0",
        ),
        helper.make_node("DequantizeLinear", ["y0q", "y0_scale", "y0_zp"], ["y0"], name="dq0"),
        helper.make_node("Relu", ["y0"], ["h0"], name="relu0"),
        helper.make_node("DynamicQuantizeLinear", ["h0"], ["hq", "hs", "hzp"], name="dyn"),
        helper.make_node("MatMulInteger", ["hq", "W1q", "hzp", "W1zp"], ["m1i"], name="ifc1"),
        helper.make_node("Cast", ["m1i"], ["m1f"], name="cast1", to=FLOAT),
        helper.make_node("Mul", ["hs", "W1s"], ["s1"], name="scale1"),
        helper.make_node("Mul", ["m1f", "s1"], ["h1"], name="rescale1"),
        helper.make_node("Gemm", ["h1", "W2", "b2"], ["y"], name="fc2", transB=1),
    ]
    return _model(
        "qlinear_mlp", nodes, [_vi("x", ["batch", 16])], [_vi("y", ["batch", 4])],
        _tensors(params),
    )  # fmt: skip


def if_model(seed: int = 0) -> onnx.ModelProto:
    """An If whose branches hold MatMuls on outer-scope weights; a float layer after it.

    x[batch,8] -> cond = ReduceSum(x) > 0 (opset 17: axes as input, none given: all)
    If cond: then branch = MatMul(x, W_then[8,8]), else branch = MatMul(x, W_else[8,8])
             -> branch[batch,8] (a graph output: never affected by pruning)
    branch -> Relu -> MatMul(W_out[8,4]) -> Add b -> y[batch,4]  (prunable)
    x -> MatMul(W_shared[8,8]) -> side[batch,8]; W_shared is also read in the then branch
    """
    rng = np.random.default_rng(seed)
    params = {
        "W_then": _w(rng, (8, 8), 8),
        "W_else": _w(rng, (8, 8), 8),
        "W_shared": _w(rng, (8, 8), 8),
        "W_out": _w(rng, (8, 4), 8),
        "b": _b(rng, 4),
        "zero": np.array(0.0, dtype=np.float32),
    }
    then_branch = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W_then"], ["t0"], name="then_fc"),
            helper.make_node("MatMul", ["t0", "W_shared"], ["t_out"], name="then_shared"),
        ],
        "then",
        [],
        [_vi("t_out", ["batch", 8])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W_else"], ["e_out"], name="else_fc")],
        "else",
        [],
        [_vi("e_out", ["batch", 8])],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], name="total", keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"], name="positive"),
        helper.make_node(
            "If",
            ["cond"],
            ["branch"],
            name="choose",
            then_branch=then_branch,
            else_branch=else_branch,
        ),
        helper.make_node("Relu", ["branch"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "W_out"], ["m"], name="out_fc"),
        helper.make_node("Add", ["m", "b"], ["y"], name="out_bias"),
        helper.make_node("MatMul", ["x", "W_shared"], ["side"], name="side_fc"),
    ]
    return _model(
        "if_model",
        nodes,
        [_vi("x", ["batch", 8])],
        [_vi("branch", ["batch", 8]), _vi("y", ["batch", 4]), _vi("side", ["batch", 8])],
        _tensors(params),
    )


def loop_model(seed: int = 0) -> onnx.ModelProto:
    """A Loop whose body holds a MatMul on an outer-scope weight; a float layer after it.

    x[batch,8] -> Loop 3 times: h = Relu(MatMul(h, W_loop[8,8]) + b_loop) -> state[batch,8]
    (a graph output: never affected by pruning)
    state -> MatMul(W_out[8,4]) -> Add b -> y[batch,4]  (prunable)
    """
    rng = np.random.default_rng(seed)
    params = {
        "W_loop": _w(rng, (8, 8), 8),
        "b_loop": _b(rng, 8),
        "W_out": _w(rng, (8, 4), 8),
        "b": _b(rng, 4),
        "trips": np.array(3, dtype=np.int64),
        "keep_going": np.array(True),
    }
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="cond"),
            helper.make_node("MatMul", ["h_in", "W_loop"], ["lm"], name="loop_fc"),
            helper.make_node("Add", ["lm", "b_loop"], ["lz"], name="loop_bias"),
            helper.make_node("Relu", ["lz"], ["h_out"], name="loop_relu"),
        ],
        "body",
        [
            _vi("i", [], TensorProto.INT64),
            _vi("cond_in", [], TensorProto.BOOL),
            _vi("h_in", ["batch", 8]),
        ],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("h_out", ["batch", 8])],
    )
    nodes = [
        helper.make_node("Loop", ["trips", "keep_going", "x"], ["state"], name="loop", body=body),
        helper.make_node("MatMul", ["state", "W_out"], ["m"], name="out_fc"),
        helper.make_node("Add", ["m", "b"], ["y"], name="out_bias"),
    ]
    return _model(
        "loop_model",
        nodes,
        [_vi("x", ["batch", 8])],
        [_vi("state", ["batch", 8]), _vi("y", ["batch", 4])],
        _tensors(params),
    )


def opset_model(opset: int, seed: int = 0) -> onnx.ModelProto:
    """Conv + Gemm + MatMul at a given opset (IR version as onnxruntime needs for it).

    x[batch,2,6,6] -> Conv(C[4,2,3,3], cb, pad 1) -> Relu -> Flatten
                   -> Gemm(G[16,144], gb, transB=1) -> Relu -> MatMul(M[16,8]) -> Add mb
                   -> y[batch,8]
    """
    rng = np.random.default_rng(seed)
    params = {
        "C": _w(rng, (4, 2, 3, 3), 18),
        "cb": _b(rng, 4),
        "G": _w(rng, (16, 144), 144),
        "gb": _b(rng, 16),
        "M": _w(rng, (16, 8), 16),
        "mb": _b(rng, 8),
    }
    nodes = [
        helper.make_node(
            "Conv", ["x", "C", "cb"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1] * 4
        ),
        helper.make_node("Relu", ["c"], ["r"], name="relu0"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "G", "gb"], ["g"], name="gemm", transB=1),
        helper.make_node("Relu", ["g"], ["h"], name="relu1"),
        helper.make_node("MatMul", ["h", "M"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "mb"], ["y"], name="bias"),
    ]
    return _model(
        f"opset{opset}", nodes, [_vi("x", ["batch", 2, 6, 6])], [_vi("y", ["batch", 8])],
        _tensors(params), opset=opset,
    )  # fmt: skip


def multi_io(seed: int = 0) -> onnx.ModelProto:
    """Two inputs and two outputs, dynamic batch and sequence dims, optional empty inputs.

    tokens[batch,seq,8] -> Clip(tokens, "", hi) -> MatMul(Wt[8,16]) -> Add bt -> Relu
                        -> MatMul(Wo[16,4]) -> seq_out[batch,seq,4]
    image[batch,2,5,5]  -> Conv(Wc[4,2,3,3], "") -> Relu -> GlobalAveragePool -> Flatten
                        -> Gemm(Wg[3,4], "", transB=1) -> img_out[batch,3]
    ("" : an optional input left out by name, as exporters write it)
    """
    rng = np.random.default_rng(seed)
    params = {
        "hi": np.array(2.5, dtype=np.float32),
        "Wt": _w(rng, (8, 16), 8),
        "bt": _b(rng, 16),
        "Wo": _w(rng, (16, 4), 16),
        "Wc": _w(rng, (4, 2, 3, 3), 18),
        "Wg": _w(rng, (3, 4), 4),
    }
    nodes = [
        helper.make_node("Clip", ["tokens", "", "hi"], ["clipped"], name="clip"),
        helper.make_node("MatMul", ["clipped", "Wt"], ["tm"], name="tok_fc"),
        helper.make_node("Add", ["tm", "bt"], ["tz"], name="tok_bias"),
        helper.make_node("Relu", ["tz"], ["th"], name="tok_relu"),
        helper.make_node("MatMul", ["th", "Wo"], ["seq_out"], name="tok_out"),
        helper.make_node("Conv", ["image", "Wc", ""], ["ic"], name="img_conv", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["ic"], ["ir"], name="img_relu"),
        helper.make_node("GlobalAveragePool", ["ir"], ["ip"], name="img_pool"),
        helper.make_node("Flatten", ["ip"], ["if"], name="img_flat"),
        helper.make_node("Gemm", ["if", "Wg", ""], ["img_out"], name="img_fc", transB=1),
    ]
    return _model(
        "multi_io",
        nodes,
        [_vi("tokens", ["batch", "seq", 8]), _vi("image", ["batch", 2, 5, 5])],
        [_vi("seq_out", ["batch", "seq", 4]), _vi("img_out", ["batch", 3])],
        _tensors(params),
    )


def initializer_as_input(seed: int = 0) -> onnx.ModelProto:
    """Old-exporter style: every initializer is also listed as a graph input (opset 11).

    x[batch,16] -> Gemm(W0[32,16], b0, transB=1) -> Relu -> Gemm(W1[4,32], b1, transB=1) -> y
    """
    rng = np.random.default_rng(seed)
    params = {
        "W0": _w(rng, (32, 16), 16),
        "b0": _b(rng, 32),
        "W1": _w(rng, (4, 32), 32),
        "b1": _b(rng, 4),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "b0"], ["z0"], name="fc0", transB=1),
        helper.make_node("Relu", ["z0"], ["h0"], name="relu0"),
        helper.make_node("Gemm", ["h0", "W1", "b1"], ["y"], name="fc1", transB=1),
    ]
    inputs = [_vi("x", ["batch", 16])] + [_vi(k, list(v.shape)) for k, v in params.items()]
    return _model(
        "initializer_as_input", nodes, inputs, [_vi("y", ["batch", 4])], _tensors(params), opset=11
    )
