"""Small deterministic ONNX graphs for the tests, built with ``onnx.helper``.

Every builder returns an ``onnx.ModelProto`` (opset 17, IR version 8, so onnxruntime loads it)
whose first input dimension is the dynamic ``batch``; weights are ``normal / sqrt(fan_in)``
drawn from ``numpy.random.default_rng(seed)``. Each builder checks its model with the full ONNX
checker, so a broken fixture fails here rather than inside onnxprune.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
# Values given to named dynamic dimensions by ``random_inputs`` (besides batch = n).
DYNAMIC_DIMS = {"seq": 6}

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    path = Path(path)
    onnx.save_model(model, str(path))
    return path


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` keyed by name to ``path`` (which must end in .npz)."""
    path = Path(path)
    assert path.suffix == ".npz", path
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def input_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs a feed must provide (initializers listed as inputs excluded)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def random_inputs(model: onnx.ModelProto, n: int, seed: int) -> dict[str, np.ndarray]:
    """A batch of ``n`` standard-normal samples for every float input of ``model``.

    Dynamic dimensions: ``batch`` (and any other unnamed/unknown leading dim) -> ``n``;
    ``seq`` -> 6; other named dynamic dims -> 1.
    """
    rng = np.random.default_rng(seed)
    wanted = set(input_names(model))
    arrays = {}
    for value in model.graph.input:
        if value.name not in wanted:
            continue
        tensor_type = value.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        shape = []
        for axis, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            elif dim.dim_param == "batch" or axis == 0:
                shape.append(n)
            else:
                shape.append(DYNAMIC_DIMS.get(dim.dim_param, 1))
        arrays[value.name] = rng.standard_normal(shape).astype(dtype)
    return arrays


# ---------------------------------------------------------------------------------------------
# Internals


def _weight(rng: np.random.Generator, shape: Sequence[int], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)


def _bias(rng: np.random.Generator, size: int) -> np.ndarray:
    return (0.1 * rng.standard_normal(size)).astype(np.float32)


def _scalar(value: float, dtype: type = np.float32) -> np.ndarray:
    return np.array(value, dtype=dtype)


def _finish(
    name: str,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        inputs,
        outputs,
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="onnxprune-tests",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _matmul_chain(
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
        params[f"W{i}"] = _weight(rng, (fan_in, fan_out), fan_in).astype(dtype)
        params[f"b{i}"] = _bias(rng, fan_out).astype(dtype)
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"mm{i}"], name=f"fc{i}"))
        out = "y" if i == last else f"z{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [out], name=f"fc{i}_bias"))
        if i != last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"], name=f"relu{i}"))
            current = f"h{i}"
    return "y"


# ---------------------------------------------------------------------------------------------
# Builders


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
        params[f"W{i}"] = _weight(rng, (fan_out, fan_in), fan_in)
        params[f"b{i}"] = _bias(rng, fan_out)
        out = "y" if i == last else f"z{i}"
        nodes.append(
            helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [out], name=f"gemm{i}", transB=1)
        )
        if i != last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"], name=f"relu{i}"))
            current = f"h{i}"
    return _finish(
        "mlp_gemm",
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", sizes[-1]])],
        params,
    )


def mlp_matmul(sizes: Sequence[int] = (16, 32, 32, 4), seed: int = 0) -> onnx.ModelProto:
    """MatMul + Add(bias) + Relu layers, weights stored [in, out]; no Relu after the last.

    x[batch,16] -> MatMul(W0[16,32]) -> Add(b0) -> Relu -> MatMul(W1[32,32]) -> Add(b1)
                -> Relu -> MatMul(W2[32,4]) -> Add(b2) -> y[batch,4]
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    params: dict[str, np.ndarray] = {}
    _matmul_chain(sizes, rng, nodes, params, "x")
    return _finish(
        "mlp_matmul",
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", sizes[-1]])],
        params,
    )


def cnn_bn(seed: int = 0) -> onnx.ModelProto:
    """A small CNN with BatchNorm, a depthwise conv and a pointwise conv.

    x[batch,3,8,8] -> Conv(3->8, 3x3, pad 1, no bias) -> BatchNormalization -> Relu
                   -> Conv(8->8, 3x3, group 8, pad 1) -> Relu
                   -> Conv(8->16, 1x1) -> Relu
                   -> GlobalAveragePool -> Flatten -> Gemm(16->5, transB=1) -> y[batch,5]
    """
    rng = np.random.default_rng(seed)
    params = {
        "conv1_w": _weight(rng, (8, 3, 3, 3), 3 * 9),
        "bn_scale": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "bn_bias": _bias(rng, 8),
        "bn_mean": _bias(rng, 8),
        "bn_var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "dw_w": _weight(rng, (8, 1, 3, 3), 9),
        "dw_b": _bias(rng, 8),
        "pw_w": _weight(rng, (16, 8, 1, 1), 8),
        "pw_b": _bias(rng, 16),
        "fc_w": _weight(rng, (5, 16), 16),
        "fc_b": _bias(rng, 5),
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
    return _finish(
        "cnn_bn",
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", 5])],
        params,
    )


class LayerBuilder:
    """Appends Linear (MatMul + bias Add) and LayerNormalization nodes with seeded weights to
    ``nodes`` / ``params``, for the transformer-style builders."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.params: dict[str, np.ndarray] = {}
        self.nodes: list[onnx.NodeProto] = []

    def linear(
        self, name: str, source: str, fan_in: int, fan_out: int, bias_first: bool = False
    ) -> str:
        """``name = source @ {name}_w + {name}_b``; ``bias_first``: Add(b, x), as PyTorch
        exports it."""
        self.params[f"{name}_w"] = _weight(self.rng, (fan_in, fan_out), fan_in)
        self.params[f"{name}_b"] = _bias(self.rng, fan_out)
        product = f"{name}_mm"
        self.nodes.append(helper.make_node("MatMul", [source, f"{name}_w"], [product], name=name))
        operands = [f"{name}_b", product] if bias_first else [product, f"{name}_b"]
        self.nodes.append(helper.make_node("Add", operands, [name], name=f"{name}_bias"))
        return name

    def erf_gelu(self, source: str) -> str:
        """GELU as exporters write it: x * 0.5 * (1 + erf(x / sqrt(2))); the scalar constants
        ``sqrt2``, ``one`` and ``half`` are added if the model has none yet."""
        self.params.setdefault("sqrt2", _scalar(1.4142135))
        self.params.setdefault("one", _scalar(1.0))
        self.params.setdefault("half", _scalar(0.5))
        self.nodes += [
            helper.make_node("Div", [source, "sqrt2"], ["gelu_div"], name="gelu_div"),
            helper.make_node("Erf", ["gelu_div"], ["gelu_erf"], name="gelu_erf"),
            helper.make_node("Add", ["gelu_erf", "one"], ["gelu_add"], name="gelu_add"),
            helper.make_node("Mul", [source, "gelu_add"], ["gelu_mul"], name="gelu_mul"),
            helper.make_node("Mul", ["gelu_mul", "half"], ["gelu"], name="gelu_half"),
        ]
        return "gelu"

    def layer_norm(self, name: str, source: str, out: str, width: int) -> str:
        self.params[f"{name}_scale"] = self.rng.uniform(0.8, 1.2, width).astype(np.float32)
        self.params[f"{name}_bias"] = _bias(self.rng, width)
        self.nodes.append(
            helper.make_node(
                "LayerNormalization",
                [source, f"{name}_scale", f"{name}_bias"],
                [out],
                name=name,
                axis=-1,
                epsilon=1e-5,
            )
        )
        return out


def transformer_block(hidden: int = 32, ffn: int = 64, seed: int = 0) -> onnx.ModelProto:
    """One post-LN encoder block, single-head attention, exporter-style erf GELU.

    x[batch,seq,H] -+-> MatMul Wq + bq = q --------------------+
                    +-> MatMul Wk + bk = k -> Transpose(0,2,1) -+-> MatMul -> Mul 1/sqrt(H)
                    +-> MatMul Wv + bv = v --------------+          -> Softmax
                    |                                    +-> MatMul(attn, v) = ctx
                    |   ctx -> MatMul Wo + bo = proj
                    +-> Add(x, proj) -> LayerNormalization = ln1
    ln1 -> MatMul W1 + b1 = h -> Div 1.4142135 -> Erf -> Add 1 -> Mul h -> Mul 0.5 = g
    g -> MatMul W2 + b2 = f;  Add(ln1, f) -> LayerNormalization -> y[batch,seq,H]
    """
    build = LayerBuilder(np.random.default_rng(seed))
    params, nodes, linear = build.params, build.nodes, build.linear

    def layer_norm(name: str, source: str, out: str) -> str:
        return build.layer_norm(name, source, out, hidden)

    params["attn_scale"] = _scalar(1.0 / math.sqrt(hidden))
    params["sqrt2"] = _scalar(1.4142135)
    params["one"] = _scalar(1.0)
    params["half"] = _scalar(0.5)

    q = linear("q", "x", hidden, hidden)
    k = linear("k", "x", hidden, hidden)
    v = linear("v", "x", hidden, hidden)
    nodes += [
        helper.make_node("Transpose", [k], ["k_t"], name="k_transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", [q, "k_t"], ["scores"], name="scores"),
        helper.make_node("Mul", ["scores", "attn_scale"], ["scaled"], name="scale"),
        helper.make_node("Softmax", ["scaled"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", v], ["ctx"], name="context"),
    ]
    proj = linear("o", "ctx", hidden, hidden)
    nodes.append(helper.make_node("Add", ["x", proj], ["res1"], name="residual1"))
    ln1 = layer_norm("ln1", "res1", "ln1_out")
    h = linear("ffn1", ln1, hidden, ffn)
    gelu = build.erf_gelu(h)
    f = linear("ffn2", gelu, ffn, hidden)
    nodes.append(helper.make_node("Add", [ln1, f], ["res2"], name="residual2"))
    layer_norm("ln2", "res2", "y")
    return _finish(
        "transformer_block",
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", "seq", hidden])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", "seq", hidden])],
        params,
    )


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
        "A": _weight(rng, (width, outputs), width),
        "B": _weight(rng, (width, outputs), width),
        "scale": _scalar(scale),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["za"], name="loud"),
        helper.make_node("MatMul", ["x", "B"], ["zb"], name="quiet"),
        helper.make_node("Mul", ["zb", "scale"], ["zq"], name="scale_quiet"),
        helper.make_node("Add", ["za", "zq"], ["y"], name="sum"),
    ]
    return _finish(
        "quiet_branch",
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", outputs])],
        params,
    )


def constant_node_mlp(sizes: Sequence[int] = (16, 32, 32, 4), seed: int = 0) -> onnx.ModelProto:
    """``mlp_matmul`` with every weight and bias in a Constant node (no initializers).

    Constant W0, b0, W1, b1, W2, b2;
    x[batch,16] -> MatMul(W0) -> Add(b0) -> Relu -> MatMul(W1) -> Add(b1) -> Relu
                -> MatMul(W2) -> Add(b2) -> y[batch,4]
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    params: dict[str, np.ndarray] = {}
    _matmul_chain(sizes, rng, nodes, params, "x")
    constants = [
        helper.make_node(
            "Constant", [], [name], name=f"const_{name}", value=numpy_helper.from_array(v, name)
        )
        for name, v in params.items()
    ]
    return _finish(
        "constant_node_mlp",
        constants + nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", sizes[-1]])],
        {},
    )


def shared_weight_mlp(width: int = 16, outputs: int = 4, seed: int = 0) -> onnx.ModelProto:
    """One square MatMul weight ``W_shared`` read by two MatMul nodes.

    x[batch,16] -> MatMul(W_shared) -> Add(b0) -> Relu -> MatMul(W_shared) -> Add(b1) -> Relu
                -> MatMul(W_out[16,4]) -> Add(b2) -> y[batch,4]
    """
    rng = np.random.default_rng(seed)
    params = {
        "W_shared": _weight(rng, (width, width), width),
        "b0": _bias(rng, width),
        "b1": _bias(rng, width),
        "W_out": _weight(rng, (width, outputs), width),
        "b2": _bias(rng, outputs),
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
    return _finish(
        "shared_weight_mlp",
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", outputs])],
        params,
    )


def no_prunable(width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Nothing onnxprune can prune: x[batch,16] -> Relu -> Add(c[16]) -> y[batch,16]."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "c"], ["y"], name="shift"),
    ]
    return _finish(
        "no_prunable",
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", width])],
        {"c": _bias(rng, width)},
    )


def fp16_mlp(sizes: Sequence[int] = (16, 32, 32, 4), seed: int = 0) -> onnx.ModelProto:
    """``mlp_matmul`` entirely in float16 (input, weights, biases, output).

    x:f16[batch,16] -> MatMul(W0:f16) -> Add(b0) -> Relu -> MatMul(W1) -> Add(b1) -> Relu
                    -> MatMul(W2) -> Add(b2) -> y:f16[batch,4]
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    params: dict[str, np.ndarray] = {}
    _matmul_chain(sizes, rng, nodes, params, "x", dtype=np.float16)
    return _finish(
        "fp16_mlp",
        nodes,
        [helper.make_tensor_value_info("x", FLOAT16, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", FLOAT16, ["batch", sizes[-1]])],
        params,
    )


# ---------------------------------------------------------------------------------------------
# Reading weights back


def stored_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer and every Constant node's tensor value, by tensor name."""
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value":
                weights[node.output[0]] = numpy_helper.to_array(attr.t)
    return weights


def embedding_encoder(
    vocab: int = 96, hidden: int = 64, seq: int = 6, seed: int = 0
) -> onnx.ModelProto:
    """A BERT-style embedding front end and a small MLP head.

    ids[batch, seq] (int64) -> Gather(word_emb[vocab, H]) + Gather(pos_emb[seq, H], pos_ids)
        -> LayerNormalization -> MatMul W + b -> Relu -> MatMul W2 + b2 = y[batch, seq, H/2]
    Also outputs the raw word embeddings (``tokens`` = Gather(word_emb, ids)), so a test can
    read what a stored embedding table gathers back.
    """
    build = LayerBuilder(np.random.default_rng(seed))
    params, nodes = build.params, build.nodes
    params["word_emb"] = build.rng.standard_normal((vocab, hidden)).astype(np.float32)
    params["pos_emb"] = (0.1 * build.rng.standard_normal((seq, hidden))).astype(np.float32)
    params["pos_ids"] = np.arange(seq, dtype=np.int64)[None, :]
    nodes += [
        helper.make_node("Gather", ["word_emb", "ids"], ["tokens"], name="word_gather"),
        helper.make_node("Gather", ["pos_emb", "pos_ids"], ["positions"], name="pos_gather"),
        helper.make_node("Add", ["tokens", "positions"], ["embedded"], name="embed_add"),
    ]
    normed = build.layer_norm("embed_ln", "embedded", "normed", hidden)
    h = build.linear("fc1", normed, hidden, hidden)
    nodes.append(helper.make_node("Relu", [h], ["h_relu"], name="relu"))
    build.linear("fc2", "h_relu", hidden, hidden // 2)
    nodes.append(helper.make_node("Identity", ["fc2"], ["y"], name="out"))
    return _finish(
        "embedding_encoder",
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", seq])],
        [
            helper.make_tensor_value_info("y", FLOAT, ["batch", seq, hidden // 2]),
            helper.make_tensor_value_info("tokens", FLOAT, ["batch", seq, hidden]),
        ],
        params,
    )


def token_ids(n: int, vocab: int = 96, seq: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` rows of token ids for ``embedding_encoder``."""
    return {"ids": np.random.default_rng(seed).integers(0, vocab, (n, seq), dtype=np.int64)}
