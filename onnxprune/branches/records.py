"""What a run knows about the layers inside If branches: where each branch sits and which
samples take it, and the statistics and reports of its layers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..calibrate.runner import collect_statistics
from ..calibrate.sources import CalibrationSet
from ..calibrate.stats import LayerStats
from ..calibrate.subgraphs import (
    branch_prefix,
    fold_branch,
    inline_if_branch,
    names_read,
    node_label,
    subgraphs_of,
)
from ..config import PruneConfig
from ..graph import GraphView
from ..layers import Layer, find_layers
from ..progress import Progress
from ..report import LayerReport


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
        from ..pipeline import write_layer  # the run's writer (pipeline imports this module)

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
