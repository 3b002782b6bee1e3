"""--sequential: the prunable layers grouped into topological stages.

A layer's depth is one more than the deepest prunable layer its inputs depend on (a layer whose
inputs come straight from the graph inputs has depth 1). Layers of one depth never read each
other's outputs (Q, K and V of an attention block share a depth), so one calibration pass can
serve them all. Consecutive depths are merged so that there are at most ``max_stages`` stages.
"""

from __future__ import annotations

import numpy as np
import onnx

from .layers import Layer


def layer_depths(model: onnx.ModelProto, layers: list[Layer]) -> list[int]:
    """Depth of each layer (nodes of ``model``, which is topologically sorted as ONNX requires)."""
    index = {id(node): i for i, layer in enumerate(layers) for node in layer.nodes}
    depths = [0] * len(layers)
    tensor_depth: dict[str, int] = {}
    for node in model.graph.node:
        reached = max((tensor_depth.get(name, 0) for name in node.input if name), default=0)
        position = index.get(id(node))
        if position is not None:
            reached += 1
            depths[position] = max(depths[position], reached)
        for name in node.output:
            tensor_depth[name] = reached
    return depths


def group_stages(depths: list[int], max_stages: int) -> list[list[int]]:
    """Layer indices per stage, shallowest first; ``max_stages`` 0 means one stage per depth.

    With more depths than ``max_stages`` the depths are cut into that many runs of consecutive
    depths of (nearly) equal length.
    """
    levels = sorted(set(depths))
    if max_stages and len(levels) > max_stages:
        runs = [list(run) for run in np.array_split(np.array(levels), max_stages)]
    else:
        runs = [[level] for level in levels]
    stages = []
    for run in runs:
        members = set(int(level) for level in run)
        stages.append([i for i, depth in enumerate(depths) if depth in members])
    return stages
