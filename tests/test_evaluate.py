"""In-memory candidate evaluation equals writing the candidate and running it (differential)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import models
import numpy as np
import onnx
import pytest

from onnxprune.config import PruneConfig
from onnxprune.evaluate import CandidateEvaluator
from onnxprune.metric import decision_score
from onnxprune.pipeline import Pruner, mean_cosine
from onnxprune.scoring import get_method

BUILDERS = [
    pytest.param(models.mlp_gemm, id="gemm"),  # Gemm with alpha/beta, transB
    pytest.param(models.cnn_bn, id="cnn"),  # Conv biases, grouped layers
    pytest.param(models.transformer_block, id="transformer"),  # MatMul + following Add
    pytest.param(models.shared_weight_mlp, id="shared"),  # one weight, several nodes
    pytest.param(models.constant_node_mlp, id="constant-node"),
    pytest.param(models.fp16_mlp, id="fp16"),
]


def _pruner(tmp_path: Path, build: Callable[..., onnx.ModelProto], **options: object) -> Pruner:
    model = build(seed=2)
    path = models.save(model, tmp_path / "model.onnx")
    calib = models.write_npz(tmp_path / "calib.npz", models.random_inputs(model, 48, seed=1))
    return Pruner(path, calib, PruneConfig(sparsity=0.6, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("update", [True, False])
def test_judged_in_memory_equals_the_written_candidate(
    tmp_path: Path, build: Callable[..., onnx.ModelProto], update: bool
) -> None:
    """Every layer pruned (bias changes included, created where a layer has no bias): the
    decision score from the session whose weights are inputs equals the written model's."""
    pruner = _pruner(tmp_path, build, update=update, allocation="group")
    reference = pruner.calibration_reference()
    scorer = get_method("contrib")
    judged, prepared = pruner._judge(pruner.config, scorer, "layer", reference)
    assert prepared is not None, "the in-memory evaluator was used"
    written = decision_score(pruner.compare(pruner._build(pruner.config, scorer, "layer", None)))
    written_on_probe = decision_score(
        pruner.compare(pruner._build(pruner.config, scorer, "layer", None), reference)
    )
    # fp16: the bias change rounds differently added to the output than folded into the bias.
    tolerance = 1e-4 if build is models.fp16_mlp else 1e-5
    assert judged == pytest.approx(written_on_probe, abs=tolerance)
    assert 0.0 < written <= 1.0 and judged < 1.0 - 1e-6, "the candidate differs from the original"


@pytest.mark.parametrize("build", BUILDERS)
def test_a_single_layer_session_judges_like_the_shared_one(
    tmp_path: Path, build: Callable[..., onnx.ModelProto]
) -> None:
    pruner = _pruner(tmp_path, build)
    reference = pruner.calibration_reference()
    scorer = get_method("contrib")
    everything = CandidateEvaluator(pruner.proto, dict(enumerate(pruner.layers)))
    scores = []
    for index, layer in enumerate(pruner.layers):
        prepared = pruner._prepare(pruner.config, scorer, "row", {layer.weight_name})
        (final,), (delta,) = prepared.finals, prepared.deltas
        weights = {index: layer.from_matrix(final)}
        alone = CandidateEvaluator(pruner.proto, {index: layer})
        shared = everything.compare(weights, {index: delta}, reference)
        own = alone.compare(weights, {index: delta}, reference)
        assert mean_cosine(own) == pytest.approx(mean_cosine(shared), abs=1e-6)
        scores.append(mean_cosine(own))
    assert min(scores) < 1.0 - 1e-6, "some single-layer candidate changes the outputs"


def test_unchanged_weights_reproduce_the_original(tmp_path: Path) -> None:
    pruner = _pruner(tmp_path, models.cnn_bn)
    evaluator = CandidateEvaluator(pruner.proto, dict(enumerate(pruner.layers)))
    fidelity = evaluator.compare({}, {}, pruner.calibration_reference())
    assert all(np.isclose(o.cosine, 1.0, atol=1e-7) for o in fidelity.outputs)
    assert all(o.max_abs_error < 1e-5 for o in fidelity.outputs)
