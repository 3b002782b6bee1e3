"""Transformer-style graphs: a post-LN block, an embedding front end, a BERT encoder layer as
PyTorch exports it; ``LayerBuilder`` appends their Linear / LayerNorm / GELU pieces."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from builders.core import FLOAT, INT64, bias, finish, scalar, value_info, weight


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
        self.params[f"{name}_w"] = weight(self.rng, (fan_in, fan_out), fan_in)
        self.params[f"{name}_b"] = bias(self.rng, fan_out)
        product = f"{name}_mm"
        self.nodes.append(helper.make_node("MatMul", [source, f"{name}_w"], [product], name=name))
        operands = [f"{name}_b", product] if bias_first else [product, f"{name}_b"]
        self.nodes.append(helper.make_node("Add", operands, [name], name=f"{name}_bias"))
        return name

    def erf_gelu(self, source: str) -> str:
        """GELU as exporters write it: x * 0.5 * (1 + erf(x / sqrt(2))); the scalar constants
        ``sqrt2``, ``one`` and ``half`` are added if the model has none yet."""
        self.params.setdefault("sqrt2", scalar(1.4142135))
        self.params.setdefault("one", scalar(1.0))
        self.params.setdefault("half", scalar(0.5))
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
        self.params[f"{name}_bias"] = bias(self.rng, width)
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

    params["attn_scale"] = scalar(1.0 / math.sqrt(hidden))
    params["sqrt2"] = scalar(1.4142135)
    params["one"] = scalar(1.0)
    params["half"] = scalar(0.5)

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
    return finish(
        "transformer_block",
        nodes,
        [value_info("x", ["batch", "seq", hidden])],
        [value_info("y", ["batch", "seq", hidden])],
        params,
    )


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
    return finish(
        "embedding_encoder",
        nodes,
        [value_info("ids", ["batch", seq], INT64)],
        [
            value_info("y", ["batch", seq, hidden // 2]),
            value_info("tokens", ["batch", seq, hidden]),
        ],
        params,
    )


def token_ids(n: int, vocab: int = 96, seq: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` rows of token ids for ``embedding_encoder``."""
    return {"ids": np.random.default_rng(seed).integers(0, vocab, (n, seq), dtype=np.int64)}


def encoder_feeds(n: int, seed: int, hidden: int = 32) -> dict[str, np.ndarray]:
    """Feeds for ``encoder_layer``: x [n, 6, hidden] and an attention mask in which half the
    samples end in two padding tokens."""
    rng = np.random.default_rng(seed)
    mask = np.ones((n, 6), np.int64)
    mask[: n // 2, 4:] = 0
    return {"x": rng.standard_normal((n, 6, hidden)).astype(np.float32), "attention_mask": mask}


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
        "one": scalar(1.0),
        "neg": scalar(-10000.0),
        "scale": scalar(math.sqrt(head_dim)),
        "sqrt2": scalar(1.4142135),
        "half": scalar(0.5),
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
    return finish(
        "encoder_layer",
        nodes,
        [
            value_info("x", ["batch", "seq", hidden]),
            value_info("attention_mask", ["batch", "seq"], INT64),
        ],
        [value_info("y", ["batch", "seq", hidden])],
        params,
    )
