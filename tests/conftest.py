"""Shared fixtures: run the CLI entry point in-process and capture what it prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from onnxprune.cli import main

REPO = Path(__file__).resolve().parent.parent


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
