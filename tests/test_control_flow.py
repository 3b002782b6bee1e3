"""Branch specialisation for pruning inside If subgraphs (onnxprune.calibrate.subgraphs)."""

from __future__ import annotations

import builders
import numpy as np
import onnx
import pytest
from ort_run import first_output

from onnxprune.calibrate.routing import condition_probe, taken_branches
from onnxprune.calibrate.subgraphs import inline_if_branch


@pytest.mark.parametrize(("branch", "flag"), [("then_branch", True), ("else_branch", False)])
def test_inlined_branch_equals_the_if_model_for_inputs_taking_it(branch: str, flag: bool) -> None:
    model = builders.if_mlp()
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
    flat = inline_if_branch(builders.if_mlp(), "switch", "else_branch")
    matmuls = {n.name: list(n.input) for n in flat.graph.node if n.op_type == "MatMul"}
    assert matmuls["switch/else_branch/else_mm1"] == ["x", "W_outer"]
    assert matmuls["switch/else_branch/else_mm2"] == [
        "switch/else_branch/r",
        "switch/else_branch/else_W2",
    ]


def test_unknown_node_or_branch_is_refused() -> None:
    with pytest.raises(ValueError, match="no top-level If"):
        inline_if_branch(builders.if_mlp(), "nope", "then_branch")
    with pytest.raises(ValueError, match="branch must be"):
        inline_if_branch(builders.if_mlp(), "switch", "body")


def test_batches_are_routed_by_a_computed_condition() -> None:
    # Replace the bool input by a computed condition: flag = ReduceSum(x) > 0.
    model = builders.if_mlp(computed_condition=True)
    onnx.checker.check_model(model, full_check=True)
    x = np.ones((3, 8), np.float32)
    feeds = [{"x": x}, {"x": -x}, {"x": 2 * x}]
    assert taken_branches(model, "switch", feeds) == ["then_branch", "else_branch", "then_branch"]
    # A bool graph input is read straight from the feed.
    plain = [{"x": x, "flag": np.array(f)} for f in (False, True)]
    assert taken_branches(builders.if_mlp(), "switch", plain) == ["else_branch", "then_branch"]


def test_the_condition_probe_runs_only_what_the_condition_needs() -> None:
    # flag = ReduceSum(x) > 0, then the If: the probe keeps the two nodes and ``zero`` only.
    model = builders.if_mlp(computed_condition=True)
    probe = condition_probe(model, ["flag"])
    assert [n.name for n in probe.graph.node] == ["sum", "gt"]
    assert [t.name for t in probe.graph.initializer] == ["zero"]
    x = np.ones((3, 8), np.float32)
    assert bool(first_output(probe, {"x": -x}, "flag")) is False
