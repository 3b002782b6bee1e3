"""Specialise a model for one branch of a top-level ``If`` node.

Building block for pruning inside control flow (see docs/METHOD.md, "Control flow"): a copy of
the model in which one ``If`` node is replaced by the nodes of the branch the calibration data
takes is an ordinary graph, so the existing statistics taps work on it unchanged. The branch's
own tensor names (node outputs, branch initializers) are prefixed so they cannot collide with
the outer graph's; outer-scope names the branch reads stay as they are (they are visible in the
main graph). Each ``If`` output becomes an ``Identity`` of the matching branch output, so every
consumer downstream is untouched.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

BRANCHES = ("then_branch", "else_branch")


def _has_subgraph(graph: onnx.GraphProto) -> bool:
    return any(attr.HasField("g") or len(attr.graphs) for n in graph.node for attr in n.attribute)


def inline_if_branch(model: onnx.ModelProto, node_name: str, branch: str) -> onnx.ModelProto:
    """A copy of ``model`` whose top-level ``If`` node ``node_name`` always runs ``branch``.

    ``branch`` is ``"then_branch"`` or ``"else_branch"``. The copy computes, for inputs whose
    condition selects ``branch``, exactly what ``model`` computes. Raises ``ValueError`` when the
    node is not a top-level ``If`` or the branch itself holds subgraphs (nested control flow
    would need the renaming to reach inside them).
    """
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, not {branch!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    index = next(
        (i for i, n in enumerate(graph.node) if n.name == node_name and n.op_type == "If"), None
    )
    if index is None:
        raise ValueError(f"no top-level If node named {node_name!r}")
    if_node = graph.node[index]
    body = next(a.g for a in if_node.attribute if a.name == branch)
    if _has_subgraph(body):
        raise ValueError(f"{node_name!r} {branch} holds nested control flow")

    prefix = f"{node_name}/{branch}/"
    local = {t.name for t in body.initializer} | {o for n in body.node for o in n.output if o}

    def rename(name: str) -> str:
        return prefix + name if name in local else name

    new_nodes: list[onnx.NodeProto] = []
    for inner in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = prefix + (inner.name or inner.output[0])
        copy.input[:] = [rename(n) if n else n for n in inner.input]
        copy.output[:] = [rename(n) if n else n for n in inner.output]
        new_nodes.append(copy)
    for branch_out, if_out in zip(body.output, if_node.output, strict=True):
        if if_out:
            new_nodes.append(
                helper.make_node(
                    "Identity", [rename(branch_out.name)], [if_out], name=f"{prefix}{if_out}"
                )
            )
    for init in body.initializer:
        lifted = graph.initializer.add()
        lifted.CopyFrom(init)
        lifted.name = rename(init.name)

    nodes = [*graph.node[:index], *new_nodes, *graph.node[index + 1 :]]
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def taken_branches(
    model: onnx.ModelProto, node_name: str, feeds: list[dict[str, np.ndarray]]
) -> list[str]:
    """The branch the top-level ``If`` node ``node_name`` takes on each feed (one batch each).

    ``If`` decides once per run, so routing is per batch: the condition tensor is exposed as an
    extra graph output (or read from the feed when it is a graph input) and evaluated.
    """
    if_node = next((n for n in model.graph.node if n.name == node_name and n.op_type == "If"), None)
    if if_node is None:
        raise ValueError(f"no top-level If node named {node_name!r}")
    cond = if_node.input[0]
    inputs = {i.name for i in model.graph.input}
    session = None
    if cond not in inputs:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.append(helper.make_tensor_value_info(cond, TensorProto.BOOL, None))
        session = ort.InferenceSession(
            probe.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    branches = []
    for feed in feeds:
        value = feed[cond] if session is None else session.run([cond], feed)[0]
        branches.append(BRANCHES[0] if bool(np.asarray(value).reshape(-1)[0]) else BRANCHES[1])
    return branches
