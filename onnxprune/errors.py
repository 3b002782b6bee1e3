"""One error tree. Every error the user can cause is an ``OnnxPruneError`` with an exit code.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; nothing else in the
package decides exit codes except :class:`onnxprune.report.Report`.
"""

from __future__ import annotations

# Exit codes, documented in README.md ("Exit codes").
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_WRITE_FAILED = 4
EXIT_GATE_FAILED = 5
EXIT_INTERRUPTED = 130


class OnnxPruneError(Exception):
    """Base class: a problem the user can act on, reported as one line."""

    exit_code = EXIT_BAD_INPUT


class UsageError(OnnxPruneError):
    """Impossible or contradictory options (sparsity out of range, output path is the input)."""

    exit_code = EXIT_USAGE


class ModelError(OnnxPruneError):
    """The model file is missing, unreadable, corrupt or not a valid ONNX graph."""


class UnsupportedModelError(ModelError):
    """The model is valid ONNX but uses something onnxprune cannot handle safely."""


class CalibrationDataError(OnnxPruneError):
    """Calibration or evaluation data is missing, malformed, or does not fit the model."""


class OutputWriteError(OnnxPruneError):
    """The pruned model could not be written (unwritable directory, disk full)."""

    exit_code = EXIT_WRITE_FAILED


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that every ``finally`` (temporary and
    staging directories) runs as on Ctrl-C; the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
