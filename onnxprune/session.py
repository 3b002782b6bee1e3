"""onnxruntime sessions: built from a path, errors translated into one line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .errors import CalibrationDataError, ModelError
from .io import write_model

# Protobuf's hard limit; above it a model must live on disk with external data.
_INLINE_LIMIT = 1_800_000_000


def save_for_session(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` where onnxruntime can load it by path (external data when large)."""
    write_model(model, path, external_data=model.ByteSize() > _INLINE_LIMIT)
    return path


def make_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings from ORT would reach the user's terminal
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own pybind exception types
        raise ModelError(f"onnxruntime cannot load the model: {first_line(err)}") from err


def run(
    session: ort.InferenceSession,
    outputs: Sequence[str] | None,
    feed: dict[str, np.ndarray],
    source: str,
) -> list[np.ndarray]:
    try:
        return session.run(list(outputs) if outputs is not None else None, feed)  # type: ignore[no-any-return]
    except Exception as err:
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
        raise CalibrationDataError(
            f"onnxruntime rejected a batch from {source} ({shapes}): {first_line(err)}"
        ) from err


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line[:300]
