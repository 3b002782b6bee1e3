"""``onnxprune inspect``: what would be pruned, how it is stored, and how much each layer hurts.

Without data: every prunable layer (op, shape, parameters, storage, dtype, the activation gate
seen after it) and every weight-bearing node that is skipped, with why. With calibration data:
each layer's *sensitivity*, the fidelity of the model when that layer alone is pruned (per row,
at ``sparsity``), measured on held-out samples, so users can choose what to ``--exclude``.
"""

from __future__ import annotations

from .layers import InspectedLayer, InspectReport, inspect_model
from .pattern import PatternLayer, PatternReport, check_pattern

__all__ = [
    "InspectReport",
    "InspectedLayer",
    "PatternLayer",
    "PatternReport",
    "check_pattern",
    "inspect_model",
]
