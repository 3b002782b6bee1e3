"""The one way tests run a model in onnxruntime (CPU): a ModelProto, its serialized bytes or a
path, fed by name; the outputs come back in the model's order (or those named)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

Model = onnx.ModelProto | bytes | str | Path


def run_model(
    model: Model, feed: dict[str, np.ndarray], names: list[str] | None = None
) -> list[np.ndarray]:
    """Every output (or ``names``) of ``model`` on ``feed``."""
    if isinstance(model, onnx.ModelProto):
        source: bytes | str = model.SerializeToString()
    else:
        source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return [np.asarray(value) for value in session.run(names, feed)]


def first_output(model: Model, feed: dict[str, np.ndarray], name: str | None = None) -> np.ndarray:
    """The first output of ``model`` (or the one called ``name``) on ``feed``."""
    return run_model(model, feed, None if name is None else [name])[0]
