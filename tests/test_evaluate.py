"""In-memory candidate evaluation equals writing the candidate and running it (differential)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest

from onnxprune.config import PruneConfig
from onnxprune.evaluate import CandidateEvaluator
from onnxprune.layers import Layer
from onnxprune.metric import decision_score
from onnxprune.pipeline import Pruner, candidates, decisions, mean_cosine
from onnxprune.scoring import get_method
from onnxprune.session import header_model
from onnxprune.suffix import SuffixEvaluator, suffix_cut, suffix_windows
from onnxprune.verify import Fidelity, ReferenceRun

BUILDERS = [
    pytest.param(builders.mlp_gemm, id="gemm"),  # Gemm with alpha/beta, transB
    pytest.param(builders.cnn_bn, id="cnn"),  # Conv biases, grouped layers
    pytest.param(builders.transformer_block, id="transformer"),  # MatMul + following Add
    pytest.param(builders.shared_weight_mlp, id="shared"),  # one weight, several nodes
    pytest.param(builders.constant_node_mlp, id="constant-node"),
    pytest.param(builders.fp16_mlp, id="fp16"),
]


def _pruner(tmp_path: Path, build: Callable[..., onnx.ModelProto], **options: object) -> Pruner:
    model = build(seed=2)
    path, calib = builders.save_with_calibration(model, tmp_path, 48)
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
    tolerance = 1e-4 if build is builders.fp16_mlp else 1e-5
    assert judged == pytest.approx(written_on_probe, abs=tolerance)
    assert 0.0 < written <= 1.0 and judged < 1.0 - 1e-6, "the candidate differs from the original"


def _single_layer_candidates(
    pruner: Pruner, reference: ReferenceRun
) -> Iterator[tuple[int, Layer, dict[int, np.ndarray], np.ndarray | None, Fidelity]]:
    """Each layer pruned alone (contrib, row selection): (index, layer, its weight as the layer
    reads it by index, its bias change, the candidate judged in the session over the whole
    model)."""
    scorer = get_method("contrib")
    everything = CandidateEvaluator(pruner.proto, dict(enumerate(pruner.layers)))
    for index, layer in enumerate(pruner.layers):
        prepared = pruner._prepare(pruner.config, scorer, "row", {layer.weight_name})
        (final,), (delta,) = prepared.finals, prepared.deltas
        weights = {index: layer.from_matrix(final)}
        yield index, layer, weights, delta, everything.compare(weights, {index: delta}, reference)


@pytest.mark.parametrize("build", BUILDERS)
def test_a_single_layer_session_judges_like_the_shared_one(
    tmp_path: Path, build: Callable[..., onnx.ModelProto]
) -> None:
    pruner = _pruner(tmp_path, build)
    reference = pruner.calibration_reference()
    scores = []
    for index, layer, weights, delta, shared in _single_layer_candidates(pruner, reference):
        alone = CandidateEvaluator(pruner.proto, {index: layer})
        own = alone.compare(weights, {index: delta}, reference)
        assert mean_cosine(own) == pytest.approx(mean_cosine(shared), abs=1e-6)
        scores.append(mean_cosine(own))
    assert min(scores) < 1.0 - 1e-6, "some single-layer candidate changes the outputs"


def test_unchanged_weights_reproduce_the_original(tmp_path: Path) -> None:
    pruner = _pruner(tmp_path, builders.cnn_bn)
    evaluator = CandidateEvaluator(pruner.proto, dict(enumerate(pruner.layers)))
    fidelity = evaluator.compare({}, {}, pruner.calibration_reference())
    assert all(np.isclose(o.cosine, 1.0, atol=1e-7) for o in fidelity.outputs)
    assert all(o.max_abs_error < 1e-5 for o in fidelity.outputs)


@pytest.mark.parametrize("build", BUILDERS)
def test_the_suffix_session_judges_like_the_whole_model(
    tmp_path: Path, build: Callable[..., onnx.ModelProto]
) -> None:
    """A single-layer candidate judged on the graph downstream of the layer (upstream values
    from the boundary cache) scores as in the session over the whole model."""
    pruner = _pruner(tmp_path, build)
    reference = pruner.sensitivity_reference()
    scores = []
    for index, layer, weights, delta, whole in _single_layer_candidates(pruner, reference):
        suffix = pruner._suffix_evaluator(layer.weight_name, reference)
        assert isinstance(suffix, SuffixEvaluator)
        cut = suffix.compare(weights, {index: delta}, reference)
        # fp16: onnxruntime fuses differently in the shorter graph, rounding differs.
        tolerance = 1e-4 if build is builders.fp16_mlp else 1e-6
        assert mean_cosine(cut) == pytest.approx(mean_cosine(whole), abs=tolerance)
        assert decision_score(cut) == pytest.approx(decision_score(whole), abs=tolerance)
        scores.append(mean_cosine(cut))
    assert min(scores) < 1.0 - 1e-6, "some single-layer candidate changes the outputs"
    cuts = [suffix_cut(pruner.proto, [layer]) for layer in pruner.layers]
    assert all(cut is not None for cut in cuts)
    # The last layer's suffix is shorter than the first's: upstream nodes are not rerun.
    assert cuts[-1] is not None and cuts[0] is not None
    assert len(cuts[-1].positions) <= len(cuts[0].positions)


def test_the_suffix_computes_constant_chains_instead_of_feeding_them(tmp_path: Path) -> None:
    """A shape computed from constants (Constant -> Cast -> Reshape's shape input) is part of
    the suffix, not a boundary input: fed at run time it would hide static shapes from
    onnxruntime's optimiser."""
    helper = onnx.helper
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.standard_normal((8, 16)).astype(np.float32),
        "w2": rng.standard_normal((16, 4)).astype(np.float32),
    }
    shape = helper.make_tensor("shape_f", onnx.TensorProto.FLOAT, [2], [-1.0, 16.0])
    nodes = [
        helper.make_node("Constant", [], ["shape_c"], value=shape),
        helper.make_node("Cast", ["shape_c"], ["shape"], to=onnx.TensorProto.INT64),
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Reshape", ["h", "shape"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    inputs, outputs = [builders.value_info("x", ["n", 8])], [builders.value_info("y", ["n", 4])]
    model = builders.finish(
        "g", nodes, inputs, outputs, params, ir_version=onnx.IR_VERSION, producer=""
    )
    path, calib = builders.save_with_calibration(model, tmp_path, 32)
    pruner = Pruner(path, calib, PruneConfig(sparsity=0.5))
    first = next(layer for layer in pruner.layers if layer.weight_name == "w1")
    cut = suffix_cut(pruner.proto, [first])
    assert cut is not None
    assert cut.boundary == () and cut.inputs == ("x",), "nothing computed upstream is fed"
    kinds = [pruner.proto.graph.node[k].op_type for k in cut.positions]
    assert kinds == ["Constant", "Cast", "MatMul", "Reshape", "Relu", "MatMul"]
    second = next(layer for layer in pruner.layers if layer.weight_name == "w2")
    later = suffix_cut(pruner.proto, [second])
    assert later is not None and later.boundary == ("r",) and later.inputs == ()


def test_whole_candidates_judged_as_written_models_score_as_in_the_shared_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conv models judge --group auto's trials as written models (pre-packed weights); the
    scores equal the shared in-memory session's."""
    pruner = _pruner(tmp_path, builders.cnn_bn, allocation="group")
    assert pruner._builds_whole_candidates()
    reference = pruner.calibration_reference()
    scorer = get_method("contrib")
    built, _ = pruner._judge(pruner.config, scorer, "global", reference)
    monkeypatch.setattr(Pruner, "_builds_whole_candidates", lambda self: False)
    shared, prepared = pruner._judge(pruner.config, scorer, "global", reference)
    assert prepared is not None
    assert built == pytest.approx(shared, abs=1e-5)
    assert built < 1.0 - 1e-6


def test_reusing_the_auto_winners_layers_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sensitivity curves and the final candidate reuse the --group auto winner's pruned
    layers (``Pruner.remember``): the written model is byte-identical to a run that prunes
    every layer afresh, and fewer layers are pruned."""
    import onnxprune

    model = builders.cnn_bn(seed=2)
    path, calib = builders.save_with_calibration(model, tmp_path, 48)
    calls: list[int] = []
    original_prune_matrix = decisions.prune_matrix

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original_prune_matrix(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(decisions, "prune_matrix", counted)
    onnxprune.prune(path, calib, output=tmp_path / "reused.onnx", sparsity=0.6)
    reused_calls = len(calls)
    calls.clear()
    monkeypatch.setattr(Pruner, "remember", lambda self, prepared: None)
    onnxprune.prune(path, calib, output=tmp_path / "fresh.onnx", sparsity=0.6)
    assert (tmp_path / "reused.onnx").read_bytes() == (tmp_path / "fresh.onnx").read_bytes()
    assert reused_calls < len(calls)


def test_boundary_values_are_kept_a_window_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a memory limit that holds only a few layers' boundaries, the values are computed
    window by window (more runs of the original) and every judged score is unchanged; a
    layer whose own boundary exceeds the limit is judged on the whole model instead. Each
    layer has a suffix session of its own here (no windows), so that each has its own cut."""
    monkeypatch.setattr(
        candidates, "suffix_windows", lambda layers: [(i,) for i in range(len(layers))]
    )
    pruner = _pruner(tmp_path, builders.transformer_block)
    reference = pruner.sensitivity_reference()
    scorer = get_method("contrib")

    def judged_all() -> list[float]:
        scores = []
        for layer in pruner.layers:
            at = dataclasses.replace(pruner.config, allocation="group")
            scores.append(pruner._judge(at, scorer, "row", reference, {layer.weight_name})[0])
        return scores

    unlimited = judged_all()
    assert pruner._boundary is not None and pruner._boundary.runs == 2  # sizes, one window
    sizes = pruner._boundary._sizes(reference)
    samples = int(reference.selected.sum())
    cuts = [c for c in pruner._cuts or [] if c is not None]
    largest = max(sum(sizes[n] for n in {*c.boundary, *pruner._boundary.outputs}) for c in cuts)
    monkeypatch.setattr(candidates, "BOUNDARY_CACHE_BYTES", largest * samples)
    pruner._cuts, pruner._boundary, pruner._suffix = None, None, None
    assert judged_all() == pytest.approx(unlimited, abs=1e-9)
    assert pruner._boundary is not None and pruner._boundary.runs > 2
    monkeypatch.setattr(candidates, "BOUNDARY_CACHE_BYTES", 1)
    pruner._cuts, pruner._boundary, pruner._suffix = None, None, None
    assert pruner._suffix_evaluator(pruner.layers[0].weight_name, reference) is None
    assert judged_all() == pytest.approx(unlimited, abs=1e-6)


def test_matmul_layers_share_suffix_sessions_in_windows_and_convs_keep_their_own() -> None:
    class Kind:
        def __init__(self, stats_kind: str) -> None:
            self.stats_kind = stats_kind

    class FakeLayer:
        def __init__(self, stats_kind: str) -> None:
            self.op = Kind(stats_kind)

    kinds = ["dense"] * 5 + ["conv"] + ["dense"] * 4 + ["conv", "conv"]
    layers = [FakeLayer(k) for k in kinds]
    # 9 MatMul layers: windows of 3, cut short by each conv (which stands alone).
    windows = suffix_windows(layers)  # type: ignore[arg-type]
    assert windows == [(0, 1, 2), (3, 4), (5,), (6, 7, 8), (9,), (10,), (11,)]
    assert sorted(i for w in windows for i in w) == list(range(len(layers)))


def _deep_mlp(seed: int) -> onnx.ModelProto:
    return builders.mlp_matmul((16, 32, 32, 32, 32, 32, 4), seed=seed)  # 6 MatMul layers


@pytest.mark.parametrize("build", [builders.transformer_block, _deep_mlp])
def test_a_window_session_judges_like_one_session_per_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: Callable[..., onnx.ModelProto]
) -> None:
    """Every layer judged in its window's shared suffix session scores as in a suffix session
    of its own (the window's other weights are fed their original values)."""
    pruner = _pruner(tmp_path, build)
    reference = pruner.sensitivity_reference()
    scorer = get_method("contrib")
    at = dataclasses.replace(pruner.config, allocation="group")

    def judged() -> list[float]:
        pruner._cuts, pruner._boundary, pruner._suffix = None, None, None
        names = [layer.weight_name for layer in pruner.layers]
        return [pruner._judge(at, scorer, "row", reference, {name})[0] for name in names]

    windowed = judged()
    assert pruner._windows and max(len(w) for w in pruner._windows.values()) > 1
    monkeypatch.setattr(
        candidates, "suffix_windows", lambda layers: [(i,) for i in range(len(layers))]
    )
    alone = judged()
    assert windowed == pytest.approx(alone, abs=1e-6)
    assert min(alone) < 1.0 - 1e-6


@pytest.mark.parametrize("build", BUILDERS)
def test_a_session_on_the_runs_arrays_judges_like_one_with_its_own_copy(
    tmp_path: Path, build: Callable[..., onnx.ModelProto]
) -> None:
    """The shared evaluator and the boundary session take the run's already-read
    initializer values (``Pruner.arrays``) instead of copying the model's: same judgements."""
    pruner = _pruner(tmp_path, build)
    reference = pruner.calibration_reference()
    layers = dict(enumerate(pruner.layers))
    copying = CandidateEvaluator(pruner.proto, layers)
    sharing = CandidateEvaluator(pruner.proto, layers, pruner.arrays())
    for index, _, weights, delta, _ in _single_layer_candidates(pruner, reference):
        own = copying.compare(weights, {index: delta}, reference)
        shared = sharing.compare(weights, {index: delta}, reference)
        assert [o.cosine for o in shared.outputs] == [o.cosine for o in own.outputs]


def test_the_runs_arrays_share_the_layers_weights(tmp_path: Path) -> None:
    """A layer read straight from its initializer is not read a second time."""
    pruner = _pruner(tmp_path, lambda seed: builders.mlp_gemm((16, 64, 64, 4), seed))
    arrays = pruner.arrays()
    plain = [x for x in pruner.layers if x.value is not None and x.weight_name in arrays]
    assert len(plain) == 2  # the two 64-wide layers are large enough to be moved
    assert all(np.shares_memory(arrays[x.weight_name], x.value) for x in plain)


def test_the_header_model_differs_only_in_the_held_initializers() -> None:
    model = builders.cnn_bn()
    assert header_model(model, set()).SerializeToString() == model.SerializeToString()
    held = {t.name for t in model.graph.initializer if t.name.endswith("_w")}
    assert held
    header = header_model(model, held)
    for original, copied in zip(model.graph.initializer, header.graph.initializer, strict=True):
        assert copied.name == original.name and list(copied.dims) == list(original.dims)
        if original.name in held:
            assert copied.data_location == onnx.TensorProto.EXTERNAL and not copied.raw_data
        else:
            assert copied == original
    assert list(header.graph.node) == list(model.graph.node)
    assert header.opset_import == model.opset_import
