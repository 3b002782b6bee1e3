"""What judging keeps (sessions, boundary values, probe outputs, pruned layers, scores) is
dropped once the candidate is chosen (``Pruner.release_judging``) and rebuilt on demand: a
later build writes the same model, and the suffix sessions are gone after the sensitivity
curves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import builders
import onnx
import pytest

from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner


@pytest.mark.parametrize("make", [builders.residual_cnn, builders.cnn_bn])
def test_a_build_after_release_writes_the_same_model(
    tmp_path: Path, make: Callable[..., onnx.ModelProto]
) -> None:
    model = make(seed=3)
    path = builders.save(model, tmp_path / "model.onnx")
    calib = builders.write_npz(tmp_path / "calib.npz", builders.random_inputs(model, 48, seed=2))
    pruner = Pruner(path, calib, PruneConfig(sparsity=0.6))
    first = pruner.build()
    # The default (sensitivity allocation) judged single layers on suffix sessions; those
    # are released with the curves, before the whole-model comparison that follows them.
    assert pruner.sensitivity_builds > 0
    assert pruner._cuts is not None  # judged on suffix sessions
    assert pruner._suffix is None and pruner._boundary is None
    pruner.release_judging()
    assert pruner._trial_reference is None and not pruner._pruned and not pruner._scores
    second = pruner.build()
    assert first.group == second.group
    assert _weights(first.model) == _weights(second.model)


def _weights(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: t.SerializeToString() for t in model.graph.initializer}
