"""Shared fixtures: run the CLI entry point in-process and capture what it prints."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import pytest

from onnxprune.cli import main

REPO = Path(__file__).resolve().parent.parent
# The bundled example: the digits CNN and its calibration folder.
EXAMPLE_CNN = REPO / "examples" / "digits_cnn.onnx"
EXAMPLE_CALIB = REPO / "calibration_data" / "digits"


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """``cli(arg, ...)`` runs ``onnxprune.cli.main`` and returns its exit code and output.

    ``main`` always ends in ``sys.exit``; arguments may be paths or numbers.
    """

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        code = done.value.code
        assert isinstance(code, int), f"main() exited with {code!r}, not an int exit code"
        return CliResult(code, captured.out, captured.err)

    return run


def assert_refused(result: CliResult, message: str, out: Path, code: int = 2) -> None:
    """Exit ``code`` (a usage error unless told), ``message`` in a one-line error, and no
    ``out`` written."""
    assert result.code == code, result.err
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not out.exists()


def run_and_report(
    cli: CliRunner, model: Path, calib: Path, out: Path, *args: object
) -> dict[str, Any]:
    """Prune ``model`` into ``out`` quietly (extra CLI ``args``), assert success and a model
    that passes the full checker, and return the JSON report."""
    report = out.with_suffix(".json")
    result = cli(model, "--calib", calib, "-o", out, "--report", report, "-q", *args)
    assert result.code == 0, result.err
    onnx.checker.check_model(str(out), full_check=True)
    data: dict[str, Any] = json.loads(report.read_text())
    return data
