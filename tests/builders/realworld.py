"""Graphs the way real exporters and quantizers write them: weights behind Transpose / Cast (bf16
storage), QDQ and QLinear quantised layers, several inputs and outputs with dynamic batch and
sequence dims, optional (empty-name) inputs, initializers also listed as graph inputs, and one
model per opset."""

from __future__ import annotations

import ml_dtypes  # installed with onnx: numpy_helper's bfloat16
import numpy as np
import onnx
from onnx import TensorProto, helper

from builders.core import FLOAT, bias, finish, tensors, value_info, vector_model, weight


def viewed_weights(seed: int = 0) -> onnx.ModelProto:
    """Weights reached through Transpose / Cast, as exporters write them.

    x[batch,16] -> MatMul(Transpose(Wt[32,16]) = W0) -> Add b0 -> Relu
                -> MatMul(Transpose(Cast<float>(W1:bf16[32,32])) = W1t) -> Add b1 -> Relu
                -> Gemm(h, Cast<float>(W2:f16[4,32]) = W2f, b2, transB=1) = y[batch,4]
    """
    rng = np.random.default_rng(seed)
    params = {
        "Wt": weight(rng, (32, 16), 16),
        "b0": bias(rng, 32),
        "W1": weight(rng, (32, 32), 32).astype(ml_dtypes.bfloat16),
        "b1": bias(rng, 32),
        "W2": weight(rng, (4, 32), 32).astype(np.float16),
        "b2": bias(rng, 4),
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
    return vector_model("viewed_weights", nodes, params, 16, 4)


def shared_view(seed: int = 0) -> onnx.ModelProto:
    """Views that must not be pruned: the stored constant or the view's output has another
    reader.

    x[batch,8] -> MatMul(Transpose(A)) -> Relu -> MatMul(Transpose(A)^T ... ) chain:
      A[8,8] is read by Transpose ta and by Add (so A is not private);
      Transpose(B) output Bt is read by MatMul and by Add (so the view is not private);
      C[8,8] is read by Reshape (not a supported view).
    """
    rng = np.random.default_rng(seed)
    params = {"A": weight(rng, (8, 8), 8), "B": weight(rng, (8, 8), 8), "C": weight(rng, (8, 8), 8)}
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
    return finish(
        "shared_view", nodes, [value_info("x", [8, 8])], [value_info("y", [8, 8])], params
    )


def bf16_matmul(seed: int = 0) -> onnx.ModelProto:
    """x:bf16[batch,8] -> MatMul(W:bf16[8,4]) -> y:bf16 (onnxruntime has no CPU kernel)."""
    rng = np.random.default_rng(seed)
    w = weight(rng, (8, 4), 8).astype(ml_dtypes.bfloat16)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")]
    bf16 = TensorProto.BFLOAT16
    return finish(
        "bf16",
        nodes,
        [value_info("x", ["batch", 8], bf16)],
        [value_info("y", ["batch", 4], bf16)],
        tensors({"W": w}),
    )


def quantize(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
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
    w0 = weight(rng, (16, 32), 16)
    w0q, w0s = quantize(w0, axis=1)
    w1 = weight(rng, (32, 32), 32)
    _, w1s = quantize(w1, axis=1)
    params = {
        "x_scale": np.array(0.05, dtype=np.float32),
        "x_zp": np.array(0, dtype=np.int8),
        "h_scale": np.array(0.03, dtype=np.float32),
        "h_zp": np.array(0, dtype=np.int8),
        "W0q": w0q,
        "W0s": w0s,
        "W0zp": np.zeros(32, dtype=np.int8),
        "b0": bias(rng, 32),
        "W1": w1,
        "W1s": w1s,
        "W1zp": np.zeros(32, dtype=np.int8),
        "b1": bias(rng, 32),
        "W2": weight(rng, (4, 32), 32),
        "b2": bias(rng, 4),
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
    return vector_model("qdq_mlp", nodes, params, 16, 4)


def qlinear_mlp(seed: int = 0) -> onnx.ModelProto:
    """QOperator format: QLinearMatMul and MatMulInteger on int8 weights, one float Gemm.

    x[batch,16] -> QuantizeLinear -> QLinearMatMul(W0q) -> DequantizeLinear -> Relu
                -> DynamicQuantizeLinear -> MatMulInteger(W1q:uint8) -> Cast -> Mul scale
                -> Gemm(W2:f32[4,32], b2, transB=1) = y[batch,4]
    """
    rng = np.random.default_rng(seed)
    w0q, _ = quantize(weight(rng, (16, 32), 16), axis=1)
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
        "W2": weight(rng, (4, 32), 32),
        "b2": bias(rng, 4),
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
    return vector_model("qlinear_mlp", nodes, params, 16, 4)


def opset_model(opset: int, seed: int = 0) -> onnx.ModelProto:
    """Conv + Gemm + MatMul at a given opset (IR version as onnxruntime needs for it).

    x[batch,2,6,6] -> Conv(C[4,2,3,3], cb, pad 1) -> Relu -> Flatten
                   -> Gemm(G[16,144], gb, transB=1) -> Relu -> MatMul(M[16,8]) -> Add mb
                   -> y[batch,8]
    """
    rng = np.random.default_rng(seed)
    params = {
        "C": weight(rng, (4, 2, 3, 3), 18),
        "cb": bias(rng, 4),
        "G": weight(rng, (16, 144), 144),
        "gb": bias(rng, 16),
        "M": weight(rng, (16, 8), 16),
        "mb": bias(rng, 8),
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
    return finish(
        f"opset{opset}",
        nodes,
        [value_info("x", ["batch", 2, 6, 6])],
        [value_info("y", ["batch", 8])],
        params,
        opset=opset,
    )


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
        "Wt": weight(rng, (8, 16), 8),
        "bt": bias(rng, 16),
        "Wo": weight(rng, (16, 4), 16),
        "Wc": weight(rng, (4, 2, 3, 3), 18),
        "Wg": weight(rng, (3, 4), 4),
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
    return finish(
        "multi_io",
        nodes,
        [value_info("tokens", ["batch", "seq", 8]), value_info("image", ["batch", 2, 5, 5])],
        [value_info("seq_out", ["batch", "seq", 4]), value_info("img_out", ["batch", 3])],
        params,
    )


def initializer_as_input(seed: int = 0) -> onnx.ModelProto:
    """Old-exporter style: every initializer is also listed as a graph input (opset 11).

    x[batch,16] -> Gemm(W0[32,16], b0, transB=1) -> Relu -> Gemm(W1[4,32], b1, transB=1) -> y
    """
    rng = np.random.default_rng(seed)
    params = {
        "W0": weight(rng, (32, 16), 16),
        "b0": bias(rng, 32),
        "W1": weight(rng, (4, 32), 32),
        "b1": bias(rng, 4),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "W0", "b0"], ["z0"], name="fc0", transB=1),
        helper.make_node("Relu", ["z0"], ["h0"], name="relu0"),
        helper.make_node("Gemm", ["h0", "W1", "b1"], ["y"], name="fc1", transB=1),
    ]
    inputs = [value_info("x", ["batch", 16])] + [
        value_info(k, list(v.shape)) for k, v in params.items()
    ]
    return finish(
        "initializer_as_input",
        nodes,
        inputs,
        [value_info("y", ["batch", 4])],
        params,
        opset=11,
    )
