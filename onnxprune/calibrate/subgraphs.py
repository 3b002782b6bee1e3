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

from collections.abc import Callable, Iterator

import onnx
from onnx import helper

BRANCHES = ("then_branch", "else_branch")


def node_label(node: onnx.NodeProto) -> str:
    """A node's name, or ``op:first output`` when it has none (as ``GraphView.node_name``)."""
    if node.name:
        return node.name
    return f"{node.op_type}:{node.output[0]}" if node.output else node.op_type


def branch_prefix(node_name: str, branch: str) -> str:
    """What ``inline_if_branch`` puts before the branch's own names."""
    return f"{node_name}/{branch}/"


def subgraphs_of(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) of every subgraph a node holds."""
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.name, attr.g
        for sub in attr.graphs:
            yield attr.name, sub


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph in it, at any depth."""
    yield graph
    for node in graph.node:
        for _, sub in subgraphs_of(node):
            yield from all_graphs(sub)


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of ``graph`` (or of a subgraph in it) reads, and its outputs."""
    names = {o.name for o in graph.output}
    for sub in all_graphs(graph):
        names.update(n for node in sub.node for n in node.input if n)
        names.update(o.name for o in sub.output)
    return names


def find_if(graph: onnx.GraphProto, node_name: str) -> int | None:
    return next(
        (i for i, n in enumerate(graph.node) if n.op_type == "If" and node_label(n) == node_name),
        None,
    )


def _branch(node: onnx.NodeProto, branch: str) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == branch)


def _local_names(body: onnx.GraphProto) -> set[str]:
    return {t.name for t in body.initializer} | {o for n in body.node for o in n.output if o}


def _rename_node(node: onnx.NodeProto, rename: Callable[[str], str]) -> None:
    """Apply ``rename`` to the tensor names ``node`` reads and writes, and to every name read
    or written in its subgraphs (at any depth): a nested graph reads the branch's names as
    outer-scope values, and cannot define one of them again (ONNX forbids shadowing), so
    ``rename`` changes only references to them."""
    node.input[:] = [rename(n) if n else n for n in node.input]
    node.output[:] = [rename(n) if n else n for n in node.output]
    for _, sub in subgraphs_of(node):
        for inner in sub.node:
            _rename_node(inner, rename)
        for value in [*sub.output, *sub.value_info]:
            value.name = rename(value.name)


def _branch_of(
    graph: onnx.GraphProto, node_name: str, branch: str
) -> tuple[int, onnx.NodeProto, onnx.GraphProto, str, set[str]]:
    """(position, node, body, name prefix, names local to the body) of ``branch`` of the
    top-level ``If`` named ``node_name``; ``ValueError`` when there is none."""
    index = find_if(graph, node_name)
    if index is None:
        raise ValueError(f"no top-level If node named {node_name!r}")
    if_node = graph.node[index]
    body = _branch(if_node, branch)
    return index, if_node, body, branch_prefix(node_name, branch), _local_names(body)


def inline_if_branch(model: onnx.ModelProto, node_name: str, branch: str) -> onnx.ModelProto:
    """A copy of ``model`` whose top-level ``If`` node ``node_name`` always runs ``branch``.

    ``branch`` is ``"then_branch"`` or ``"else_branch"``. The copy computes, for inputs whose
    condition selects ``branch``, exactly what ``model`` computes. Control flow nested in the
    branch stays (it becomes control flow of the main graph), its references to the branch's
    names renamed too. Raises ``ValueError`` when the node is not a top-level ``If``.
    """
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, not {branch!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    index, if_node, body, prefix, local = _branch_of(graph, node_name, branch)

    def rename(name: str) -> str:
        return prefix + name if name in local else name

    new_nodes: list[onnx.NodeProto] = []
    for inner in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.name = prefix + (inner.name or inner.output[0])
        _rename_node(copy, rename)
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


def fold_branch(model: onnx.ModelProto, node_name: str, branch: str, flat: onnx.ModelProto) -> None:
    """Write back into ``model`` (in place) what was changed in ``flat``, a copy made by
    ``inline_if_branch(model, node_name, branch)`` and then edited (pruned weights, bias
    changes, inserted bias ``Add`` nodes): the branch's nodes and initializers become the
    branch body again (its original names without the prefix; names created in ``flat`` keep
    it, so they cannot shadow an outer name), and main-graph initializers and ``Constant``
    nodes that were changed or added are copied to ``model``'s main graph (outer scope, visible
    in the branch). The
    main-graph nodes of ``flat`` must be ``model``'s (only the branch may have gained nodes).
    """
    graph = model.graph
    _, if_node, body, prefix, local = _branch_of(graph, node_name, branch)

    def restore(name: str) -> str:
        if name.startswith(prefix) and name[len(prefix) :] in local:
            return name[len(prefix) :]
        return name

    if_outputs = {o for o in if_node.output if o}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    branch_nodes: list[onnx.NodeProto] = []
    main_nodes = 0
    for node in flat.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in constants:
            # A main-graph Constant node (a weight the branch reads, pruned there).
            if constants[node.output[0]] != node:
                constants[node.output[0]].CopyFrom(node)
            main_nodes += 1
            continue
        outputs = [o for o in node.output if o]
        if outputs and all(o.startswith(prefix) for o in outputs):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = node.name[len(prefix) :] if node.name.startswith(prefix) else node.name
            _rename_node(copy, restore)
            branch_nodes.append(copy)
        elif not (node.op_type == "Identity" and set(outputs) <= if_outputs and outputs):
            main_nodes += 1
    if main_nodes != len(graph.node) - 1:
        raise ValueError(f"the main graph changed while {node_name!r} {branch} was inlined")
    inits: list[onnx.TensorProto] = []
    outer = {t.name: t for t in graph.initializer}
    for tensor in flat.graph.initializer:
        if tensor.name.startswith(prefix):
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            copy.name = restore(tensor.name)
            inits.append(copy)
        elif tensor.name not in outer:
            graph.initializer.append(tensor)
        elif outer[tensor.name] != tensor:
            outer[tensor.name].CopyFrom(tensor)
    del body.node[:]
    body.node.extend(branch_nodes)
    del body.initializer[:]
    body.initializer.extend(inits)
