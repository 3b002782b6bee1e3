"""The one way tests run a model in onnxruntime (CPU): a ModelProto, its serialized bytes or a
path, fed by name; the outputs come back in the model's order (or those named)."""

from __future__ import annotations

from pathlib import Path

import builders
import numpy as np
import onnx
import onnxruntime as ort

Model = onnx.ModelProto | bytes | str | Path


def session(model: Model, log_level: int | None = None) -> ort.InferenceSession:
    """A CPU session; ``log_level``: onnxruntime's log severity (3 errors only, 4 fatal only),
    for graphs that make it warn on purpose."""
    if isinstance(model, onnx.ModelProto):
        source: bytes | str = model.SerializeToString()
    else:
        source = model if isinstance(model, bytes) else str(model)
    options = ort.SessionOptions()
    if log_level is not None:
        options.log_severity_level = log_level
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_model(
    model: Model,
    feed: dict[str, np.ndarray],
    names: list[str] | None = None,
    log_level: int | None = None,
) -> list[np.ndarray]:
    """Every output (or ``names``) of ``model`` on ``feed``."""
    return [np.asarray(value) for value in session(model, log_level).run(names, feed)]


def first_output(
    model: Model,
    feed: dict[str, np.ndarray],
    name: str | None = None,
    log_level: int | None = None,
) -> np.ndarray:
    """The first output of ``model`` (or the one called ``name``) on ``feed``."""
    return run_model(model, feed, None if name is None else [name], log_level)[0]


def outputs_by_name(
    model: Model, feed: dict[str, np.ndarray], log_level: int | None = None
) -> dict[str, np.ndarray]:
    """Every output of ``model`` on ``feed``, by output name."""
    run = session(model, log_level)
    names = [o.name for o in run.get_outputs()]
    return dict(zip(names, (np.asarray(v) for v in run.run(names, feed)), strict=True))


def intermediates(
    model: onnx.ModelProto, feed: dict[str, np.ndarray], names: list[str]
) -> list[np.ndarray]:
    """The float tensors ``names`` computed inside ``model`` on ``feed`` (exposed as extra
    outputs of a copy)."""
    return run_model(builders.with_outputs(model, names), feed, names)
