"""Control flow: If and Loop subgraphs with outer-scope weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from builders.core import BOOL, INT64, bias, finish, subgraph, value_info, weight


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
        "W_then": weight(rng, (8, 8), 8),
        "W_else": weight(rng, (8, 8), 8),
        "W_shared": weight(rng, (8, 8), 8),
        "W_out": weight(rng, (8, 4), 8),
        "b": bias(rng, 4),
        "zero": np.array(0.0, dtype=np.float32),
    }
    then_branch = subgraph(
        "then",
        [
            helper.make_node("MatMul", ["x", "W_then"], ["t0"], name="then_fc"),
            helper.make_node("MatMul", ["t0", "W_shared"], ["t_out"], name="then_shared"),
        ],
        [value_info("t_out", ["batch", 8])],
    )
    else_branch = subgraph(
        "else",
        [helper.make_node("MatMul", ["x", "W_else"], ["e_out"], name="else_fc")],
        [value_info("e_out", ["batch", 8])],
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
    return finish(
        "if_model",
        nodes,
        [value_info("x", ["batch", 8])],
        [
            value_info("branch", ["batch", 8]),
            value_info("y", ["batch", 4]),
            value_info("side", ["batch", 8]),
        ],
        params,
    )


def loop_model(seed: int = 0) -> onnx.ModelProto:
    """A Loop whose body holds a MatMul on an outer-scope weight; a float layer after it.

    x[batch,8] -> Loop 3 times: h = Relu(MatMul(h, W_loop[8,8]) + b_loop) -> state[batch,8]
    (a graph output: never affected by pruning)
    state -> MatMul(W_out[8,4]) -> Add b -> y[batch,4]  (prunable)
    """
    rng = np.random.default_rng(seed)
    params = {
        "W_loop": weight(rng, (8, 8), 8),
        "b_loop": bias(rng, 8),
        "W_out": weight(rng, (8, 4), 8),
        "b": bias(rng, 4),
        "trips": np.array(3, dtype=np.int64),
        "keep_going": np.array(True),
    }
    body = subgraph(
        "body",
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="cond"),
            helper.make_node("MatMul", ["h_in", "W_loop"], ["lm"], name="loop_fc"),
            helper.make_node("Add", ["lm", "b_loop"], ["lz"], name="loop_bias"),
            helper.make_node("Relu", ["lz"], ["h_out"], name="loop_relu"),
        ],
        [value_info("cond_out", [], BOOL), value_info("h_out", ["batch", 8])],
        inputs=[
            value_info("i", [], INT64),
            value_info("cond_in", [], BOOL),
            value_info("h_in", ["batch", 8]),
        ],
    )
    nodes = [
        helper.make_node("Loop", ["trips", "keep_going", "x"], ["state"], name="loop", body=body),
        helper.make_node("MatMul", ["state", "W_out"], ["m"], name="out_fc"),
        helper.make_node("Add", ["m", "b"], ["y"], name="out_bias"),
    ]
    return finish(
        "loop_model",
        nodes,
        [value_info("x", ["batch", 8])],
        [value_info("state", ["batch", 8]), value_info("y", ["batch", 4])],
        params,
    )


def vad_model(seed: int = 0) -> onnx.ModelProto:
    """A voice-activity-detector-like model whose whole network sits in If branches.

    x [batch, T] float, sr [batch] int64 (sample rate). cond = ReduceMax(sr) > 8000.
    then (16 kHz, T = 48): x @ t_W1 [48, 24] + t_b1 -> Relu -> @ W_head [24, 4] + b_head
    else (8 kHz, T = 24):  x -> Reshape [b, 4, 6] -> Conv e_Wc [8, 4, 3] + e_bc -> Relu
                           -> Reshape [b, 32] -> @ W_outer [32, 24] -> Relu -> @ W_head + b_head
    W_outer is an outer-scope initializer read only in the else branch; W_head and b_head are
    outer-scope initializers read by both branches. y [batch, 4].
    """
    rng = np.random.default_rng(seed)
    then_params = {"t_W1": weight(rng, (48, 24), 48), "t_b1": bias(rng, 24)}
    else_params = {
        "e_Wc": weight(rng, (8, 4, 3), 4 * 3),
        "e_bc": bias(rng, 8),
        "e_shape_in": np.array([-1, 4, 6], np.int64),
        "e_shape_flat": np.array([-1, 32], np.int64),
    }
    params = {
        "W_outer": weight(rng, (32, 24), 32),
        "W_head": weight(rng, (24, 4), 24),
        "b_head": bias(rng, 4),
        "threshold": np.array(8000, np.int64),
    }
    then_g = subgraph(
        "then",
        [
            helper.make_node("MatMul", ["x", "t_W1"], ["t_h"], name="t_fc1"),
            helper.make_node("Add", ["t_h", "t_b1"], ["t_hb"], name="t_bias1"),
            helper.make_node("Relu", ["t_hb"], ["t_r"], name="t_relu"),
            helper.make_node("MatMul", ["t_r", "W_head"], ["t_o"], name="t_head"),
            helper.make_node("Add", ["t_o", "b_head"], ["t_y"], name="t_head_bias"),
        ],
        [value_info("t_y", ["batch", 4])],
        then_params,
    )
    else_g = subgraph(
        "else",
        [
            helper.make_node("Reshape", ["x", "e_shape_in"], ["e_x3"], name="e_reshape"),
            helper.make_node("Conv", ["e_x3", "e_Wc", "e_bc"], ["e_c"], name="e_conv"),
            helper.make_node("Relu", ["e_c"], ["e_cr"], name="e_relu1"),
            helper.make_node("Reshape", ["e_cr", "e_shape_flat"], ["e_f"], name="e_flatten"),
            helper.make_node("MatMul", ["e_f", "W_outer"], ["e_h"], name="e_fc"),
            helper.make_node("Relu", ["e_h"], ["e_r"], name="e_relu2"),
            helper.make_node("MatMul", ["e_r", "W_head"], ["e_o"], name="e_head"),
            helper.make_node("Add", ["e_o", "b_head"], ["e_y"], name="e_head_bias"),
        ],
        [value_info("e_y", ["batch", 4])],
        else_params,
    )
    nodes = [
        helper.make_node("ReduceMax", ["sr"], ["sr_max"], name="sr_max", keepdims=0),
        helper.make_node("Greater", ["sr_max", "threshold"], ["wide"], name="is_16k"),
        helper.make_node(
            "If", ["wide"], ["y"], name="switch", then_branch=then_g, else_branch=else_g
        ),
    ]
    return finish(
        "vad",
        nodes,
        [value_info("x", ["batch", "T"]), value_info("sr", ["batch"], INT64)],
        [value_info("y", ["batch", 4])],
        params,
        producer="",
    )


def if_mlp(seed: int = 0, computed_condition: bool = False) -> onnx.ModelProto:
    """``y = If(flag, then: relu(x @ Wt1) @ Wt2, else: relu(x @ W_outer + b) @ We2)``.

    x [batch, 8], y [batch, 4]. ``then`` keeps its weights in its own initializers; ``else``
    reads the outer-scope initializer ``W_outer`` [8, 16] (used only inside the branch). Both
    branches name an intermediate ``h`` to check that branch-local names are kept apart.
    ``flag`` is a bool input, or with ``computed_condition`` computed in the graph:
    flag = ReduceSum(x) > 0 (nodes ``sum`` and ``gt``, scalar initializer ``zero``).
    """
    rng = np.random.default_rng(seed)
    # Unscaled standard-normal weights, drawn in this order.
    wt1, wt2, we2, w_outer = (
        rng.standard_normal(shape).astype(np.float32)
        for shape in ((8, 16), (16, 4), (16, 4), (8, 16))
    )

    def branch(name: str, first: str, params: dict[str, np.ndarray]) -> onnx.GraphProto:
        nodes = [
            helper.make_node("MatMul", ["x", first], ["h"], name=f"{name}_mm1"),
            helper.make_node("Relu", ["h"], ["r"], name=f"{name}_relu"),
            helper.make_node("MatMul", ["r", f"{name}_W2"], ["y_" + name], name=f"{name}_mm2"),
        ]
        return subgraph(name, nodes, [value_info("y_" + name, ["batch", 4])], params)

    then_g = branch("then", "then_W1", {"then_W1": wt1, "then_W2": wt2})
    else_g = branch("else", "W_outer", {"else_W2": we2})
    nodes = [
        helper.make_node(
            "If", ["flag"], ["y"], name="switch", then_branch=then_g, else_branch=else_g
        )
    ]
    inputs = [value_info("x", ["batch", 8])]
    params = {"W_outer": w_outer}
    if computed_condition:
        nodes[:0] = [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
            helper.make_node("Greater", ["s", "zero"], ["flag"], name="gt"),
        ]
        params["zero"] = np.array(0.0, np.float32)
    else:
        inputs.append(value_info("flag", [], BOOL))
    return finish("if_mlp", nodes, inputs, [value_info("y", ["batch", 4])], params, producer="")


def nested_if(seed: int = 0) -> onnx.ModelProto:
    """y = If(flag, then: h = x @ D; If(flag, h @ A, h @ B), else: x @ C).

    x [batch, 8], y [batch, 8]; the inner branches read ``h``, a name of the outer then branch.
    A, B, C, D [8, 8] are unscaled standard-normal, each stored in the branch that reads it.
    """
    rng = np.random.default_rng(seed)
    values = {k: rng.standard_normal((8, 8)).astype(np.float32) for k in "ABCD"}

    def mm(source: str, weight: str, out: str) -> onnx.NodeProto:
        return helper.make_node("MatMul", [source, weight], [out], name=f"fc_{weight}")

    def graph(nodes: list[onnx.NodeProto], out: str, weights: str) -> onnx.GraphProto:
        own = {w: values[w] for w in weights}
        return subgraph(out, nodes, [value_info(out, ["batch", 8])], own)

    inner = helper.make_node(
        "If",
        ["flag"],
        ["t"],
        name="inner",
        then_branch=graph([mm("h", "A", "a")], "a", "A"),
        else_branch=graph([mm("h", "B", "b")], "b", "B"),
    )
    outer = helper.make_node(
        "If",
        ["flag"],
        ["y"],
        name="outer",
        then_branch=graph([mm("x", "D", "h"), inner], "t", "D"),
        else_branch=graph([mm("x", "C", "c")], "c", "C"),
    )
    return finish(
        "nested",
        [outer],
        [value_info("x", ["batch", 8]), value_info("flag", [], BOOL)],
        [value_info("y", ["batch", 8])],
        producer="",
    )


def constant_in_branch(rng: np.random.Generator) -> onnx.ModelProto:
    """y = If(flag, x @ K, x @ E), x [batch, 8], y [batch, 8]: K [8, 8] is a main-graph
    Constant node (``k``) read in the then branch, E [8, 8] an initializer of the else branch;
    both unscaled standard-normal, K drawn first from ``rng``."""
    k_value = rng.standard_normal((8, 8)).astype(np.float32)
    constant = helper.make_node(
        "Constant", [], ["K"], name="k", value=numpy_helper.from_array(k_value)
    )

    def branch(weight: str, out: str, params: dict[str, np.ndarray]) -> onnx.GraphProto:
        node = helper.make_node("MatMul", ["x", weight], [out], name=f"fc_{weight}")
        return subgraph(out, [node], [value_info(out, ["batch", 8])], params)

    e_value = rng.standard_normal((8, 8)).astype(np.float32)
    node = helper.make_node(
        "If",
        ["flag"],
        ["y"],
        name="pick",
        then_branch=branch("K", "k_out", {}),
        else_branch=branch("E", "e_out", {"E": e_value}),
    )
    return finish(
        "constant",
        [constant, node],
        [value_info("x", ["batch", 8]), value_info("flag", [], BOOL)],
        [value_info("y", ["batch", 8])],
        producer="",
    )
