"""Per-layer overrides (``--layer REGEX=SPEC``) and sequential calibration (``--sequential``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import builders
import numpy as np
import onnx
import pytest
from conftest import CliRunner, run_and_report
from ort_run import run_model

import onnxprune
from onnxprune.calibrate.runner import collect_statistics
from onnxprune.config import PruneConfig
from onnxprune.errors import EXIT_USAGE
from onnxprune.pipeline import Pruner
from onnxprune.stages import group_stages, layer_depths

# mlp_matmul: W0 [16, 32] (512), W1 [32, 32] (1024), W2 [32, 4] (128), stored [in, out].
SIZES = {"W0": 512, "W1": 1024, "W2": 128}


def _prepare(
    tmp_path: Path, build: Any = builders.mlp_matmul
) -> tuple[onnx.ModelProto, Path, Path]:
    model = build()
    path, calib = builders.save_with_calibration(model, tmp_path, 96)
    return model, path, calib


def _zeros(model: Path) -> dict[str, int]:
    weights = builders.stored_weights(onnx.load(str(model)))
    return {name: int(weights[name].size - np.count_nonzero(weights[name])) for name in SIZES}


def _runs_in_ort(path: Path, model: onnx.ModelProto) -> None:
    outputs = run_model(path, builders.random_inputs(model, 4, seed=5))
    assert all(np.isfinite(o).all() for o in outputs)


# -- --layer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["auto", "row", "layer", "global"])
def test_overridden_layer_gets_its_sparsity_and_the_rest_keeps_the_total(
    cli: CliRunner, tmp_path: Path, group: str
) -> None:
    model, path, calib = _prepare(tmp_path)
    out = tmp_path / "out.onnx"
    args = ["--sparsity", 0.5, "--layer", "^W0$=0.25", "--layer", "^W2$=skip"]
    report = run_and_report(cli, path, calib, out, *args, "--group", group)
    zeros = _zeros(out)
    assert zeros["W0"] == round(0.25 * SIZES["W0"])
    assert zeros["W2"] == 0, "skip leaves the layer as it is"
    assert {layer["weight"] for layer in report["layers"]} == {"W0", "W1"}
    assert any("skipped by --layer ^W2$=skip" in s["reason"] for s in report["skipped"])
    # Over the prunable weights (W0 + W1) the request holds: W1 takes what W0 does not give.
    assert abs(zeros["W0"] + zeros["W1"] - 0.5 * (SIZES["W0"] + SIZES["W1"])) <= 1
    assert report["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    overrides = {layer["weight"]: layer["override"] for layer in report["layers"]}
    assert overrides == {"W0": "^W0$=0.25", "W1": None}
    assert report["warnings"] == []
    _runs_in_ort(out, model)


def test_first_matching_override_wins_and_names_node_or_weight(
    cli: CliRunner, tmp_path: Path
) -> None:
    _, path, calib = _prepare(tmp_path)
    out = tmp_path / "out.onnx"
    # fc1 is W1's node name; "W" would match every weight but comes second.
    run_and_report(
        cli, path, calib, out, "--sparsity", 0.5, "--layer", "fc1=0.1", "--layer", "W=0.7"
    )
    zeros = _zeros(out)
    assert zeros["W1"] == round(0.1 * SIZES["W1"])
    assert zeros["W0"] == round(0.7 * SIZES["W0"])
    assert zeros["W2"] == round(0.7 * SIZES["W2"])


def test_override_method_scores_that_layer(cli: CliRunner, tmp_path: Path) -> None:
    model, path, calib = _prepare(tmp_path)
    out = tmp_path / "out.onnx"
    run_and_report(cli, path, calib, out, "--sparsity", 0.5, "--group", "row", "--layer",
         "^W1$=0.5:magnitude")  # fmt: skip
    original = builders.stored_weights(model)["W1"].T  # [out, K]
    pruned = builders.stored_weights(onnx.load(str(out)))["W1"].T
    for before, after in zip(original, pruned, strict=True):
        # magnitude, per row: the removed weights are the row's smallest |w|.
        removed = np.abs(before[after == 0])
        kept = np.abs(before[after != 0])
        assert removed.size == 16 and removed.max() <= kept.min()


def test_overrides_removing_more_than_requested_leave_the_rest_dense(
    cli: CliRunner, tmp_path: Path
) -> None:
    _, path, calib = _prepare(tmp_path)
    out = tmp_path / "out.onnx"
    report = run_and_report(cli, path, calib, out, "--sparsity", 0.2, "--layer", "^W1$=0.9")
    zeros = _zeros(out)
    assert zeros["W1"] == round(0.9 * SIZES["W1"]) and zeros["W0"] == zeros["W2"] == 0
    assert any("alone remove more than the requested" in w for w in report["warnings"])


def test_recipe_replays_overrides_byte_identically(cli: CliRunner, tmp_path: Path) -> None:
    _, path, calib = _prepare(tmp_path)
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    run_and_report(cli, path, calib, first, "--sparsity", 0.55, "--layer", "^W0$=0.3:wanda",
         "--layer", "^W2$=skip")  # fmt: skip
    recipe = Path(str(first) + ".recipe.json")
    assert json.loads(recipe.read_text())["layer_overrides"] == ["^W0$=0.3:wanda", "^W2$=skip"]
    report = run_and_report(cli, path, calib, second, "--recipe", recipe)
    assert second.read_bytes() == first.read_bytes()
    assert report["warnings"] == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("conv1=1.0", "sparsity must be in [0, 1)"),
        ("conv1=-0.1", "sparsity must be in [0, 1)"),
        ("([=0.3", "not a valid regex"),
        ("conv1", "expected REGEX=SPEC"),
        ("conv1=half", "SPEC must be skip, S or S:METHOD"),
        ("conv1=0.3:nosuch", "unknown method 'nosuch'"),
    ],
)
def test_bad_override_is_a_one_line_usage_error(
    cli: CliRunner, tmp_path: Path, spec: str, message: str
) -> None:
    _, path, calib = _prepare(tmp_path)
    out = tmp_path / "out.onnx"
    result = cli(path, "--calib", calib, "--sparsity", 0.5, "--layer", spec, "-o", out)
    assert result.code == EXIT_USAGE and not out.exists()
    assert message in result.err and result.err.count("\n") == 1


def test_sparsity_override_with_n_m_pattern_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    _, path, calib = _prepare(tmp_path)
    result = cli(path, "--calib", calib, "--pattern", "2:4", "--layer", "W0=0.3", "-o",
                 tmp_path / "out.onnx")  # fmt: skip
    assert result.code == EXIT_USAGE and "N:M" in result.err


# -- --sequential -----------------------------------------------------------------------------


def test_stages_follow_depth_and_are_capped() -> None:
    model = builders.transformer_block()
    pruner_layers = onnxprune.pipeline.find_layers(
        onnxprune.graph.GraphView(model), PruneConfig(sparsity=0.5)
    ).layers
    depths = dict(
        zip((x.weight_name for x in pruner_layers), layer_depths(model, pruner_layers), strict=True)
    )
    assert depths["q_w"] == depths["k_w"] == depths["v_w"] == 1
    assert depths["o_w"] == 2 and depths["ffn1_w"] == 3 and depths["ffn2_w"] == 4
    assert group_stages([1, 1, 2, 3, 4], 0) == [[0, 1], [2], [3], [4]]
    assert group_stages([1, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
    assert group_stages([1, 2, 3], 8) == [[0], [1], [2]]


@pytest.mark.parametrize("method", [*onnxprune.available_methods()])
@pytest.mark.parametrize("build", [builders.transformer_block, builders.cnn_bn])
def test_sequential_meets_the_target_with_every_method(
    cli: CliRunner, tmp_path: Path, method: str, build: Any
) -> None:
    model, path, calib = _prepare(tmp_path, build)
    out = tmp_path / "out.onnx"
    # No row floor: the tiny CNN's rows are too short to reach 0.6 under the default one.
    args = ["--sparsity", 0.6, "--method", method, "--min-row-weights", 0]
    one_shot = run_and_report(cli, path, calib, tmp_path / "one.onnx", *args)
    report = run_and_report(cli, path, calib, out, *args, "--sequential")
    assert report["stages"] == 4
    assert report["calibration_passes"] == 4  # one-shot (serves stage 1) + 3 stages
    assert one_shot["calibration_passes"] == 1 and one_shot["stages"] is None
    assert report["achieved_sparsity"] == pytest.approx(one_shot["achieved_sparsity"])
    assert abs(report["achieved_sparsity"] - 0.6) < 0.01
    # Each layer keeps the sparsity decided on the one-shot statistics.
    for a, b in zip(report["layers"], one_shot["layers"], strict=True):
        assert a["nonzero_after"] == b["nonzero_after"], a["name"]
    _runs_in_ort(out, model)


def test_sequential_with_update(cli: CliRunner, tmp_path: Path) -> None:
    model, path, calib = _prepare(tmp_path, builders.transformer_block)
    out = tmp_path / "out.onnx"
    report = run_and_report(cli, path, calib, out, "--sparsity", 0.5, "--sequential", "--update",
                  "--stages", 2)  # fmt: skip
    assert report["stages"] == 2 and report["calibration_passes"] == 2
    assert abs(report["achieved_sparsity"] - 0.5) < 0.01
    _runs_in_ort(out, model)


@pytest.mark.parametrize("update", [False, True])
def test_sequential_statistics_come_from_the_pruned_upstream(tmp_path: Path, update: bool) -> None:
    _, path, calib = _prepare(tmp_path)
    config = PruneConfig(sparsity=0.7, sequential=True, update=update)
    pruner = Pruner(path, calib, config)
    candidate = pruner.build()
    assert [[pruner.layers[i].weight_name for i in s] for s in pruner.stages()] == [
        ["W0"],
        ["W1"],
        ["W2"],
    ]
    one_shot, staged = pruner.statistics(), pruner.stage_statistics
    # Stage 1 has nothing pruned upstream: its statistics are the one-shot ones.
    assert staged["W0"] is one_shot["W0"]
    # W1 reads W0's pruned output: its statistics differ from the one-shot pass...
    assert not np.allclose(staged["W1"].inputs.x_sq_sum, one_shot["W1"].inputs.x_sq_sum)
    if update:
        assert staged["W1"].inputs.xtx is not None and one_shot["W1"].inputs.xtx is not None
        assert not np.allclose(staged["W1"].inputs.xtx, one_shot["W1"].inputs.xtx)
    # ... and equal what the final model feeds it (W0 is pruned there exactly as in stage 2).
    final = collect_statistics(
        candidate.model,
        onnxprune.pipeline.find_layers(onnxprune.graph.GraphView(candidate.model), config).layers,
        pruner.calibration,
        pruner.calib_mask,
        config.batch_size,
        gated=False,
        progress=False,
    )
    for name in ("W1", "W2"):
        np.testing.assert_allclose(final[name].inputs.x_sum, staged[name].inputs.x_sum, rtol=1e-5)
        np.testing.assert_allclose(
            final[name].inputs.x_sq_sum, staged[name].inputs.x_sq_sum, rtol=1e-5
        )
    assert pruner.calibration_passes == 3


def test_recipe_replays_sequential_with_overrides_byte_identically(
    cli: CliRunner, tmp_path: Path
) -> None:
    _, path, calib = _prepare(tmp_path, builders.transformer_block)
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    run_and_report(cli, path, calib, first, "--sparsity", 0.6, "--sequential", "--stages", 3,
         "--layer", "ffn2=0.4:wanda")  # fmt: skip
    recipe = Path(str(first) + ".recipe.json")
    data = json.loads(recipe.read_text())
    assert data["sequential"] is True and data["stages"] == 3
    report = run_and_report(cli, path, calib, second, "--recipe", recipe)
    assert second.read_bytes() == first.read_bytes()
    assert report["warnings"] == [] and report["calibration_passes"] == 3
