"""The run's one progress line: phases share a single bar; nothing is drawn when disabled."""

from __future__ import annotations

import pytest

from onnxprune.progress import Progress


def test_phases_share_one_bar_and_name_themselves(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(True)
    with progress.phase("calibrating", 4, "sample") as advance:
        advance(4)
    first = progress._bar
    with progress.phase("sensitivity", 2, "layer") as advance:
        advance()
        advance()
    assert progress._bar is first, "a new phase restarts the same bar"
    progress.close()
    err = capsys.readouterr().err
    assert "calibrating" in err and "sensitivity" in err and "2/2" in err


def test_a_disabled_display_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(False)
    with progress.phase("calibrating", 4, "sample") as advance:
        advance(4)
    progress.close()
    assert capsys.readouterr().err == ""
