"""Suggesting a ``--metric`` preset from a model's declared outputs and inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from .run import looks_like_detector


def suggest_preset(
    outputs: Sequence[tuple[str, Sequence[int | str | None], bool]],
    token_inputs: bool,
) -> tuple[str, str] | None:
    """(preset, why) from the model's outputs (name, shape with symbolic dims as str/None,
    is-float) and whether it has a rank-2 integer input (token ids); None when no preset fits."""
    floats = [(name, shape) for name, shape, is_float in outputs if is_float]
    for name, shape in floats:
        if looks_like_detector(shape):
            return "detector", f"{name} is [B, 4 + C, A] {list(shape)}: boxes then class scores"
    if token_inputs:
        for name, shape in floats:
            if len(shape) == 3:
                return "encoder", f"{name} is a token sequence [B, S, H] {list(shape)}"
    for name, shape in floats:
        if len(shape) == 2 and (not isinstance(shape[1], int) or shape[1] >= 2):
            return "classifier", f"{name} is [B, C] {list(shape)}: class logits"
    return None


def suggest_for_model(model: onnx.ModelProto) -> tuple[str, str] | None:
    """``suggest_preset`` from the graph's declared output shapes and input types."""

    def shape_of(value: onnx.ValueInfoProto) -> list[int | str | None]:
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]

    def is_float(value: onnx.ValueInfoProto) -> bool:
        elem = value.type.tensor_type.elem_type
        return elem != 0 and np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(elem), np.floating)

    initializers = {t.name for t in model.graph.initializer}
    token_inputs = any(
        len(shape_of(v)) == 2 and not is_float(v) and v.type.tensor_type.elem_type != 0
        for v in model.graph.input
        if v.name not in initializers
    )
    outputs = [(v.name, shape_of(v), is_float(v)) for v in model.graph.output]
    return suggest_preset(outputs, token_inputs)
