"""Finding the prunable layers of top-level If branches and routing the calibration samples
to them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx

from ..calibrate.routing import branch_masks
from ..calibrate.sources import CalibrationSet
from ..calibrate.subgraphs import (
    BRANCHES,
    branch_prefix,
    inline_if_branch,
    names_read,
    node_label,
    subgraphs_of,
)
from ..config import PruneConfig
from ..graph import GraphView
from ..layers import IF_BRANCH_REASON, SUBGRAPH_REASON, Layer, LayerScan, SkippedLayer, find_layers
from .records import BranchLayers, Site


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

    sites, accepted = _accept_layers(found, masks, readers, flat_skipped)
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


def _accept_layers(
    found: dict[tuple[str, str], dict[str, Layer]],
    masks: dict[str, dict[str, np.ndarray]],
    readers: dict[str, dict[str, set[str]]],
    skipped: list[SkippedLayer],
) -> tuple[dict[tuple[str, str], Site], dict[str, Layer]]:
    """The branch layers that can be pruned, by weight name, and the site (``If`` node,
    branch) each is read in; the others are appended to ``skipped`` with the reason. A
    weight read in both branches is one layer with the nodes of both."""
    sites: dict[tuple[str, str], Site] = {}
    accepted: dict[str, Layer] = {}
    for (name, branch), layers in found.items():
        mask = masks[name][branch]
        for weight, layer in layers.items():
            problem = _branch_problem(name, branch, weight, layer, found, readers, masks)
            if problem is not None:
                skipped.append(SkippedLayer(layer.name, layer.op.op_type, problem))
                continue
            site = sites.setdefault((name, branch), Site(name, branch, mask))
            site.nodes[weight] = [node_label(n) for n in layer.nodes]
            if weight in accepted:
                first = accepted[weight]
                accepted[weight] = dataclasses.replace(first, nodes=first.nodes + layer.nodes)
            else:
                accepted[weight] = layer
    return sites, accepted


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
