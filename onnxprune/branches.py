"""Prunable layers inside the branches of top-level ``If`` nodes (branch specialisation).

For each branch of a top-level ``If``, ``calibrate.subgraphs.inline_if_branch`` gives a copy of
the model in which the ``If`` always runs that branch: an ordinary graph, in which
``find_layers`` finds the branch's layers (branch-local names carry the prefix
``<If node>/<branch>/``; an outer-scope initializer read in the branch keeps its name) and the
statistics taps work unchanged. So:

* discovery: the layers of each specialised copy whose nodes all sit in the branch;
* routing: one pass over the calibration batches decides which branch each batch takes;
* statistics: the usual pass on each specialised copy, over the samples whose batch takes that
  branch only; an outer initializer read by layers in both branches gets the merged sums of
  both passes (as the nodes of a shared weight are merged);
* writing: the pruned weights and bias changes are written into a specialised copy of the
  candidate with the usual writer, then folded back into the ``If`` (``fold_branch``), so the
  output keeps its control flow.

A branch no calibration batch takes stays dense (and so does an outer weight it shares with a
taken branch). Control flow nested in a branch stays in place (the specialised copy keeps it,
its references to branch names renamed), but its own layers are not pruned; nor are those of
``Loop``/``Scan`` bodies: both are listed as skipped with why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .calibrate.runner import collect_statistics
from .calibrate.sources import CalibrationSet
from .calibrate.stats import LayerStats
from .calibrate.subgraphs import (
    BRANCHES,
    branch_masks,
    branch_prefix,
    fold_branch,
    inline_if_branch,
    names_read,
    node_label,
    subgraphs_of,
)
from .config import PruneConfig
from .graph import GraphView
from .layers import IF_BRANCH_REASON, SUBGRAPH_REASON, Layer, LayerScan, SkippedLayer, find_layers
from .progress import Progress
from .report import LayerReport


@dataclass
class Site:
    """One branch of one top-level ``If`` node and the layers pruned in it."""

    node: str
    branch: str
    mask: np.ndarray  # calibration samples whose batch takes the branch (bool, [total])
    # weight name -> names (in the specialised copy) of the layer's nodes in this branch
    nodes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return branch_prefix(self.node, self.branch)


@dataclass
class BranchLayers:
    """The branch layers of a model (appended to the run's layer list) and where they sit."""

    layers: list[Layer] = field(default_factory=list)
    sites: list[Site] = field(default_factory=list)
    # One line each for the report's warnings (an option that does not reach the branches).
    notes: list[str] = field(default_factory=list)

    def owns(self, layer: Layer) -> bool:
        return any(layer.weight_name in site.nodes for site in self.sites)

    def statistics(
        self,
        model: onnx.ModelProto,
        config: PruneConfig,
        dataset: CalibrationSet,
        kinds: tuple[bool, bool],
        progress: Progress,
        sample_mask: str | None,
    ) -> tuple[dict[str, LayerStats], int]:
        """(statistics of every branch layer, calibration passes run): one pass per site over
        the samples taking it; a weight read in several sites gets the merged sums."""
        gated, hessian = kinds
        found: dict[str, LayerStats] = {}
        for site in self.sites:
            flat = inline_if_branch(model, site.node, site.branch)
            by_weight = {x.weight_name: x for x in find_layers(GraphView(flat), config).layers}
            layers = [by_weight[name] for name in site.nodes]
            stats = collect_statistics(
                flat, layers, dataset, site.mask, config.batch_size, gated=gated,
                progress=progress, hessian=hessian, sample_mask=sample_mask,
            )  # fmt: skip
            for name, layer_stats in stats.items():
                found[name] = (
                    merge_stats(found[name], layer_stats) if name in found else layer_stats
                )
        return found, len(self.sites)

    def write(
        self,
        model: onnx.ModelProto,
        items: list[tuple[Layer, np.ndarray, np.ndarray | None, LayerStats]],
    ) -> tuple[list[LayerReport], list[str]]:
        """Write pruned branch layers (layer, pruned matrix [out, K], bias change [out] or None,
        statistics) into ``model`` in place; (one report per item, warnings)."""
        from .pipeline import write_layer  # the run's writer (pipeline imports this module)

        reports: dict[str, LayerReport] = {}
        warnings: list[str] = []
        for site in self.sites:
            here = [item for item in items if item[0].weight_name in site.nodes]
            if not here:
                continue
            flat = inline_if_branch(model, site.node, site.branch)
            view = GraphView(flat)
            # A tensor the If's other branches read is shared: a bias there gets a new tensor
            # (``apply._store_bias``), never a changed value the other branch would see.
            if_node = next(n for n in model.graph.node if node_label(n) == site.node)
            for attr_name, sub in subgraphs_of(if_node):
                if attr_name != site.branch:
                    view.used_in_subgraphs |= names_read(sub)
            nodes = {view.node_name(n): n for n in flat.graph.node}
            for layer, pruned, delta, stats in here:
                local = dataclasses.replace(
                    layer, nodes=[nodes[name] for name in site.nodes[layer.weight_name]]
                )
                report, written = write_layer(view, local, pruned, delta, stats)
                reports.setdefault(layer.weight_name, report)
                warnings += written
            view.flush_inserts()
            fold_branch(model, site.node, site.branch, flat)
        return [reports[item[0].weight_name] for item in items], warnings


def merge_stats(a: LayerStats, b: LayerStats) -> LayerStats:
    """The statistics of one weight read in two branches: sums added; gated sums only when
    both sides have the same gate (as for a weight shared by nodes with different gates)."""
    inputs = dataclasses.replace(a.inputs).merge(b.inputs)
    if a.gate_kind == b.gate_kind and a.gated is not None and b.gated is not None:
        return LayerStats(inputs, a.gated.merge(b.gated), a.gate_kind)
    return LayerStats(inputs, None, a.gate_kind if a.gate_kind == b.gate_kind else "none")


def top_level_ifs(model: onnx.ModelProto) -> list[str]:
    """Names (``node_label``) of the main graph's ``If`` nodes, each named once."""
    names = [node_label(n) for n in model.graph.node if n.op_type == "If"]
    return [name for name in names if names.count(name) == 1]


def attach_branch_layers(
    model: onnx.ModelProto,
    config: PruneConfig,
    scan: LayerScan,
    dataset: CalibrationSet,
    selected: np.ndarray,
    refuse: str | None = None,
) -> BranchLayers:
    """Find the prunable layers in the branches of ``model``'s top-level ``If`` nodes, route
    the selected calibration samples, and update ``scan`` in place: the layers of taken
    branches are appended to ``scan.layers``; the subgraph entries of ``scan.skipped`` get
    precise reasons. ``refuse``: why branch layers cannot be pruned in this run (they stay
    skipped with that reason)."""
    result = BranchLayers()
    names = top_level_ifs(model)
    inside = [s for s in scan.skipped if s.reason.startswith(IF_BRANCH_REASON)]
    if not inside:
        return result
    kept = [s for s in scan.skipped if not s.reason.startswith(IF_BRANCH_REASON)]
    handled: set[str] = set()  # site prefixes whose entries are replaced by precise ones
    added: list[SkippedLayer] = []

    def note(prefix: str, reason: str) -> None:
        handled.add(prefix)
        added.extend(
            SkippedLayer(s.name, s.op_type, reason) for s in inside if s.name.startswith(prefix)
        )

    if refuse is not None:
        for name in names:
            for branch in BRANCHES:
                note(branch_prefix(name, branch), f"inside If {name} {branch}: {refuse}")
        scan.skipped[:] = kept + added + _unhandled(inside, handled)
        return result

    found, flat_skipped = _scan_branches(model, config, names, inside, handled)
    routed = [name for name in names if any((name, b) in found for b in BRANCHES)]
    masks = branch_masks(model, routed, dataset, selected, config.batch_size) if routed else {}
    readers = _branch_readers(model, routed)

    sites: dict[tuple[str, str], Site] = {}
    accepted: dict[str, Layer] = {}
    for (name, branch), layers in found.items():
        mask = masks[name][branch]
        for weight, layer in layers.items():
            problem = _branch_problem(name, branch, weight, layer, found, readers, masks)
            if problem is not None:
                flat_skipped.append(SkippedLayer(layer.name, layer.op.op_type, problem))
                continue
            site = sites.setdefault((name, branch), Site(name, branch, mask))
            site.nodes[weight] = [node_label(n) for n in layer.nodes]
            if weight in accepted:  # read in both branches: one layer, nodes of both
                first = accepted[weight]
                accepted[weight] = dataclasses.replace(first, nodes=first.nodes + layer.nodes)
            else:
                accepted[weight] = layer
    result.sites = [sites[key] for key in sorted(sites)]
    result.layers = list(accepted.values())
    if config.structured and result.layers:
        result.notes.append(
            "--structured removes no units inside If branches: their layers are only "
            "weight-pruned (with --sparsity)"
        )
    scan.layers.extend(result.layers)
    scan.skipped[:] = kept + flat_skipped + added + _unhandled(inside, handled)
    return result


def _scan_branches(
    model: onnx.ModelProto,
    config: PruneConfig,
    names: list[str],
    inside: list[SkippedLayer],
    handled: set[str],
) -> tuple[dict[tuple[str, str], dict[str, Layer]], list[SkippedLayer]]:
    """Each branch's layers, found in its specialised copy ((If name, branch) -> weight ->
    layer), and the branch nodes skipped there; the prefixes of the branches scanned are added
    to ``handled``."""
    found: dict[tuple[str, str], dict[str, Layer]] = {}
    flat_skipped: list[SkippedLayer] = []
    for name in names:
        for branch in BRANCHES:
            prefix = branch_prefix(name, branch)
            if not any(s.name.startswith(prefix) for s in inside):
                continue
            layers, skipped = scan_branch(model, config, name, branch)
            flat_skipped += skipped
            found[(name, branch)] = layers
            handled.add(prefix)
    return found, flat_skipped


def _branch_readers(model: onnx.ModelProto, routed: list[str]) -> dict[str, dict[str, set[str]]]:
    """Which branches of each routed If read each outer name (a weight shared between
    branches): If name -> branch attribute -> names read."""
    readers: dict[str, dict[str, set[str]]] = {}
    for node in model.graph.node:
        if node_label(node) in routed:
            readers[node_label(node)] = {
                attr_name: names_read(sub) for attr_name, sub in subgraphs_of(node)
            }
    return readers


def _branch_problem(
    name: str,
    branch: str,
    weight: str,
    layer: Layer,
    found: dict[tuple[str, str], dict[str, Layer]],
    readers: dict[str, dict[str, set[str]]],
    masks: dict[str, dict[str, np.ndarray]],
) -> str | None:
    """Why the layer of ``weight`` in If ``name``'s ``branch`` is left dense, or None: no
    calibration batch takes the branch, or the weight is also read in the other branch by no
    layer of the same kind or in a branch no batch takes."""
    problem = None
    if not masks[name][branch].any():
        problem = f"in If {name} {branch}, which no calibration batch takes: left dense"
    for other in BRANCHES:
        if problem is None and other != branch and weight in readers[name][other]:
            twin = found.get((name, other), {}).get(weight)
            if twin is None or not _same_kind(layer, twin):
                problem = (
                    f"weight {weight} is also read in If {name} {other}, not by a "
                    "layer of the same kind"
                )
            elif not masks[name][other].any():
                problem = (
                    f"weight {weight} is also read in If {name} {other}, which no "
                    "calibration batch takes: left dense"
                )
    return problem


def scan_branch(
    model: onnx.ModelProto,
    config: PruneConfig,
    name: str,
    branch: str,
    base_dir: Path | None = None,
) -> tuple[dict[str, Layer], list[SkippedLayer]]:
    """(the layers of one branch by weight name, its skipped entries), found in its
    specialised copy (``base_dir``: where external tensors are read from)."""
    prefix = branch_prefix(name, branch)
    flat = inline_if_branch(model, name, branch)
    flat_scan = find_layers(GraphView(flat, base_dir), config)
    layers: dict[str, Layer] = {}
    skipped: list[SkippedLayer] = []
    for layer in flat_scan.layers:
        labels = [node_label(n) for n in layer.nodes]
        if all(label.startswith(prefix) for label in labels):
            layers[layer.weight_name] = layer
        elif any(label.startswith(prefix) for label in labels):
            outside = next(x for x in labels if not x.startswith(prefix))
            reason = f"weight {layer.weight_name} is also read outside If {name} {branch} "
            skipped.append(SkippedLayer(layer.name, layer.op.op_type, reason + f"({outside})"))
    # Control flow nested in the branch is top-level in the copy: its entries are the ones the
    # model's own scan has (SUBGRAPH_REASON, nested), not repeated here.
    skipped += [
        s
        for s in flat_scan.skipped
        if s.name.startswith(prefix)
        and not s.reason.startswith((IF_BRANCH_REASON, SUBGRAPH_REASON))
    ]
    return layers, skipped


def static_branch_layers(
    model: onnx.ModelProto, config: PruneConfig, base_dir: Path | None = None
) -> list[Layer]:
    """Every layer of every top-level If branch, without data (no routing: a branch no data
    takes is listed too), each weight once; for reading weights (``check-pattern``)."""
    found: dict[str, Layer] = {}
    for name in top_level_ifs(model):
        for branch in BRANCHES:
            layers, _ = scan_branch(model, config, name, branch, base_dir)
            for weight, layer in layers.items():
                found.setdefault(weight, layer)
    return list(found.values())


def _same_kind(a: Layer, b: Layer) -> bool:
    return (
        a.op.op_type == b.op.op_type
        and a.nodes[0].attribute == b.nodes[0].attribute
        and a.storage == b.storage
        and a.shape == b.shape
    )


def _unhandled(inside: list[SkippedLayer], handled: set[str]) -> list[SkippedLayer]:
    """The If-branch entries no site replaced (an If whose name is not unique)."""
    return [
        SkippedLayer(
            entry.name,
            entry.op_type,
            f"{IF_BRANCH_REASON}: not pruned (the If node's name is not unique in the graph)",
        )
        for entry in inside
        if not any(entry.name.startswith(prefix) for prefix in handled)
    ]
