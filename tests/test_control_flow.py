"""Branch specialisation for pruning inside If subgraphs (onnxprune.calibrate.subgraphs)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from ort_run import first_output

from onnxprune.calibrate.routing import condition_probe, taken_branches
from onnxprune.calibrate.subgraphs import inline_if_branch

FLOAT = TensorProto.FLOAT


def if_mlp(seed: int = 0) -> onnx.ModelProto:
    """``y = If(flag, then: relu(x @ Wt1) @ Wt2, else: relu(x @ W_outer + b) @ We2)``.

    x [batch, 8], y [batch, 4]. ``then`` keeps its weights in its own initializers; ``else``
    reads the outer-scope initializer ``W_outer`` [8, 16] (used only inside the branch). Both
    branches name an intermediate ``h`` to check that branch-local names are kept apart.
    """
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "")

    def branch(name: str, first: str, inits: list[onnx.TensorProto]) -> onnx.GraphProto:
        nodes = [
            helper.make_node("MatMul", ["x", first], ["h"], name=f"{name}_mm1"),
            helper.make_node("Relu", ["h"], ["r"], name=f"{name}_relu"),
            helper.make_node("MatMul", ["r", f"{name}_W2"], ["y_" + name], name=f"{name}_mm2"),
        ]
        out = helper.make_tensor_value_info("y_" + name, FLOAT, ["batch", 4])
        return helper.make_graph(nodes, name, [], [out], initializer=inits)

    wt1, wt2, we2, w_outer = w(8, 16), w(16, 4), w(16, 4), w(8, 16)
    wt1.name, wt2.name, we2.name, w_outer.name = "then_W1", "then_W2", "else_W2", "W_outer"
    then_g = branch("then", "then_W1", [wt1, wt2])
    else_g = branch("else", "W_outer", [we2])
    if_node = helper.make_node(
        "If", ["flag"], ["y"], name="switch", then_branch=then_g, else_branch=else_g
    )
    graph = helper.make_graph(
        [if_node],
        "if_mlp",
        [
            helper.make_tensor_value_info("x", FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", FLOAT, ["batch", 4])],
        initializer=[w_outer],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize(("branch", "flag"), [("then_branch", True), ("else_branch", False)])
def test_inlined_branch_equals_the_if_model_for_inputs_taking_it(branch: str, flag: bool) -> None:
    model = if_mlp()
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    feed = {"x": x, "flag": np.array(flag)}
    flat = inline_if_branch(model, "switch", branch)
    onnx.checker.check_model(flat, full_check=True)
    assert not any(n.op_type == "If" for n in flat.graph.node)
    np.testing.assert_allclose(
        first_output(flat, feed), first_output(model, feed), rtol=1e-6, atol=1e-6
    )
    # The specialised copy ignores the condition: it always computes the chosen branch.
    other = {"x": x, "flag": np.array(not flag)}
    np.testing.assert_allclose(
        first_output(flat, other), first_output(model, feed), rtol=1e-6, atol=1e-6
    )


def test_outer_scope_weight_is_read_by_the_inlined_branch_under_its_own_name() -> None:
    flat = inline_if_branch(if_mlp(), "switch", "else_branch")
    matmuls = {n.name: list(n.input) for n in flat.graph.node if n.op_type == "MatMul"}
    assert matmuls["switch/else_branch/else_mm1"] == ["x", "W_outer"]
    assert matmuls["switch/else_branch/else_mm2"] == [
        "switch/else_branch/r",
        "switch/else_branch/else_W2",
    ]


def test_unknown_node_or_branch_is_refused() -> None:
    with pytest.raises(ValueError, match="no top-level If"):
        inline_if_branch(if_mlp(), "nope", "then_branch")
    with pytest.raises(ValueError, match="branch must be"):
        inline_if_branch(if_mlp(), "switch", "body")


def test_batches_are_routed_by_a_computed_condition() -> None:
    # Replace the bool input by a computed condition: flag = ReduceSum(x) > 0.
    model = if_mlp()
    graph = model.graph
    del graph.input[1]
    graph.node.insert(0, helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"))
    graph.node.insert(1, helper.make_node("Greater", ["s", "zero"], ["flag"], name="gt"))
    graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    onnx.checker.check_model(model, full_check=True)
    x = np.ones((3, 8), np.float32)
    feeds = [{"x": x}, {"x": -x}, {"x": 2 * x}]
    assert taken_branches(model, "switch", feeds) == ["then_branch", "else_branch", "then_branch"]
    # A bool graph input is read straight from the feed.
    plain = [{"x": x, "flag": np.array(f)} for f in (False, True)]
    assert taken_branches(if_mlp(), "switch", plain) == ["else_branch", "then_branch"]


def test_the_condition_probe_runs_only_what_the_condition_needs() -> None:
    # flag = ReduceSum(x) > 0, then the If: the probe keeps the two nodes and ``zero`` only.
    model = if_mlp()
    graph = model.graph
    del graph.input[1]
    graph.node.insert(0, helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"))
    graph.node.insert(1, helper.make_node("Greater", ["s", "zero"], ["flag"], name="gt"))
    graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    probe = condition_probe(model, ["flag"])
    assert [n.name for n in probe.graph.node] == ["sum", "gt"]
    assert [t.name for t in probe.graph.initializer] == ["zero"]
    x = np.ones((3, 8), np.float32)
    assert bool(first_output(probe, {"x": -x}, "flag")) is False
