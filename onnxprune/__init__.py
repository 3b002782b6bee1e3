"""onnxprune: prune ONNX models with calibration data through onnxruntime."""

from __future__ import annotations

__version__ = "0.1.0"

from .api import prune
from .config import PruneConfig
from .errors import (
    CalibrationDataError,
    ModelError,
    OnnxPruneError,
    OutputWriteError,
    UnsupportedModelError,
    UsageError,
)
from .inspection import check_pattern, inspect_model
from .report import Report
from .scoring import available_methods

__all__ = [
    "CalibrationDataError",
    "ModelError",
    "OnnxPruneError",
    "OutputWriteError",
    "PruneConfig",
    "Report",
    "UnsupportedModelError",
    "UsageError",
    "__version__",
    "available_methods",
    "check_pattern",
    "inspect_model",
    "prune",
]
