"""Which branch of a top-level ``If`` each calibration batch takes.

``If`` decides once per run, so routing is per batch: a condition that is a graph input is read
from the feed, a constant one once, a computed one from a probe model that computes only the
conditions (``condition_probe``). Used to split the calibration samples by branch before
statistics are gathered inside a branch (``branches/``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from ..session import make_session, run, save_for_session
from .sources import CalibrationSet
from .subgraphs import BRANCHES, find_if


def condition_probe(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A model computing only the tensors ``names`` (bool conditions) from ``model``'s inputs:
    the nodes they depend on (through the outer names their subgraphs read too) and the
    initializers those read; the rest of the network is not run. Every graph input is kept so
    that the same feeds apply. onnx-graphsurgeon's ``cleanup`` does the reachability walk."""
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    for name in names:
        if isinstance(tensors[name], gs.Variable):
            tensors[name].dtype = np.bool_  # a graph output needs its type
    graph.outputs = [tensors[name] for name in names]
    graph.cleanup(remove_unused_graph_inputs=False)
    probe = gs.export_onnx(graph)
    probe.ir_version = model.ir_version
    return probe


class BranchRouter:
    """Which branch each top-level ``If`` node takes on a feed. ``If`` decides once per run,
    so routing is per batch: a condition that is a graph input is read from the feed, a
    constant one is read once, a computed one is exposed as an extra output of a copy of the
    model (one probe session for all the nodes)."""

    def __init__(self, model: onnx.ModelProto, node_names: list[str]) -> None:
        self.conditions: dict[str, str] = {}
        fixed: dict[str, bool] = {}
        inputs = {i.name for i in model.graph.input}
        initializers = {t.name: t for t in model.graph.initializer}
        constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
        computed: list[str] = []
        for name in node_names:
            index = find_if(model.graph, name)
            if index is None:
                raise ValueError(f"no top-level If node named {name!r}")
            cond = model.graph.node[index].input[0]
            self.conditions[name] = cond
            if cond in initializers:
                fixed[cond] = bool(onnx.numpy_helper.to_array(initializers[cond]).reshape(-1)[0])
            elif cond in constants:
                value = next(a.t for a in constants[cond].attribute if a.name == "value")
                fixed[cond] = bool(onnx.numpy_helper.to_array(value).reshape(-1)[0])
            elif cond not in inputs and cond not in computed:
                computed.append(cond)
        self.fixed = fixed
        self.computed = computed
        self.session: ort.InferenceSession | None = None
        if computed:
            probe = condition_probe(model, computed)
            with tempfile.TemporaryDirectory(prefix="onnxprune-route-") as tmp:
                self.session = make_session(save_for_session(probe, Path(tmp) / "route.onnx"))

    def route(self, feed: dict[str, np.ndarray], source: str = "data") -> dict[str, str]:
        """node name -> the branch it takes on ``feed`` (``source`` names it in errors)."""
        values: dict[str, object] = dict(self.fixed)
        if self.session is not None:
            found = run(self.session, self.computed, feed, source)
            values.update(zip(self.computed, found, strict=True))
        taken = {}
        for name, cond in self.conditions.items():
            value = values[cond] if cond in values else feed[cond]
            flag = bool(np.asarray(value).reshape(-1)[0])
            taken[name] = BRANCHES[0] if flag else BRANCHES[1]
        return taken


def branch_masks(
    model: onnx.ModelProto,
    node_names: list[str],
    dataset: CalibrationSet,
    selected: np.ndarray,
    batch_size: int,
) -> dict[str, dict[str, np.ndarray]]:
    """node name -> branch -> the selected samples whose batch takes that branch (bool,
    [total]), batched as the statistics pass batches them (one pass over the data)."""
    router = BranchRouter(model, node_names)
    masks = {
        name: {b: np.zeros_like(selected, dtype=bool) for b in BRANCHES} for name in node_names
    }
    order = np.flatnonzero(selected)
    start = 0
    for batch in dataset.batches(selected, batch_size):
        rows = order[start : start + batch.count]
        start += batch.count
        for name, branch in router.route(batch.feed, dataset.name).items():
            masks[name][branch][rows] = True
    return masks


def taken_branches(
    model: onnx.ModelProto, node_name: str, feeds: list[dict[str, np.ndarray]]
) -> list[str]:
    """The branch the top-level ``If`` node ``node_name`` takes on each feed (one batch each).

    ``If`` decides once per run, so routing is per batch: the condition tensor is exposed as an
    extra graph output (or read from the feed when it is a graph input) and evaluated.
    """
    router = BranchRouter(model, [node_name])
    return [router.route(feed)[node_name] for feed in feeds]
