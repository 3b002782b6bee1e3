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

from .records import BranchLayers, Site, merge_stats
from .scan import attach_branch_layers, scan_branch, static_branch_layers, top_level_ifs

__all__ = [
    "BranchLayers",
    "Site",
    "attach_branch_layers",
    "merge_stats",
    "scan_branch",
    "static_branch_layers",
    "top_level_ifs",
]
