"""Pruning inside the branches of a top-level If (onnxprune.branches), end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from ort_run import first_output

import onnxprune
from onnxprune.calibrate.subgraphs import fold_branch, inline_if_branch
from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner

THEN, ELSE = "switch/then_branch/", "switch/else_branch/"


def feeds(rate: int, batches: int, rows: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    width = 48 if rate == 16000 else 24
    return [
        {
            "x": rng.standard_normal((rows, width)).astype(np.float32),
            "sr": np.full(rows, rate, np.int64),
        }
        for _ in range(batches)
    ]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def tensors(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer, branch ones under ``<If>/<branch>/name`` (as the specialised copy
    names them)."""
    found = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                prefix = f"{node.name}/{attr.name}/"
                found.update(
                    {prefix + t.name: numpy_helper.to_array(t) for t in attr.g.initializer}
                )
    return found


def stacked_flag_feeds(rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Two stacked feeds for a model with x [batch, 8] and a scalar bool ``flag``: the
    condition has no batch axis, so each feed is 12 complete runs of 4 rows, flag True then
    False."""
    return [
        {"x": rng.standard_normal((12, 4, 8)).astype(np.float32), "flag": np.array([f] * 12)}
        for f in (True, False)
    ]


def layer_weights(report: onnxprune.Report) -> set[str]:
    return {layer.weight for layer in report.layers}


def test_fold_of_an_unchanged_inlined_branch_gives_the_model_back() -> None:
    model = builders.vad_model()
    for branch in ("then_branch", "else_branch"):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        fold_branch(copy, "switch", branch, inline_if_branch(copy, "switch", branch))
        assert copy.SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("method", ["contrib", "wanda"])
def test_both_branches_taken_are_pruned_to_the_target(tmp_path: Path, method: str) -> None:
    model = builders.vad_model()
    path = builders.save(model, tmp_path / "vad.onnx")
    calib = feeds(16000, 6, 16, seed=1) + feeds(8000, 6, 16, seed=2)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(
        path, calib, sparsity=0.5, method=method, min_row_weights=0, output=out
    )
    assert layer_weights(report) == {
        THEN + "t_W1",
        ELSE + "e_Wc",
        "W_outer",
        "W_head",
    }
    assert not [s for s in report.skipped if s.name.startswith("switch/")]
    assert report.calibration_passes == 2  # one per taken branch (no layer outside the If)
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    assert [n.op_type for n in pruned.graph.node] == ["ReduceMax", "Greater", "If"]
    # Overall: the target; per layer under wanda's row selection, each layer exactly.
    removed = sum(x.params - x.nonzero_after for x in report.layers)
    assert removed / sum(x.params for x in report.layers) == pytest.approx(0.5, abs=0.01)
    if method == "wanda":
        for layer in report.layers:
            assert layer.sparsity == pytest.approx(0.5), layer.name
    # The zero count is exact: the report's non-zeros are the model's (branches included).
    after = tensors(pruned)
    names = {"t_W1": THEN + "t_W1", "e_Wc": ELSE + "e_Wc", "W_outer": "W_outer"}
    names["W_head"] = "W_head"
    for layer in report.layers:
        stored = next(v for k, v in names.items() if layer.weight.endswith(k))
        assert int(np.count_nonzero(after[stored])) == layer.nonzero_after, layer.name
    floats = [v for v in after.values() if v.dtype == np.float32]
    assert report.nonzero_after == sum(int(np.count_nonzero(v)) for v in floats)
    # The pruned model runs for both branch conditions and stays close to the original.
    # (Random toy weights: at 0.5, contrib keeps 0.85-0.96 of the output cosine, wanda
    # 0.84-0.88; magnitude, which reads no statistics, 0.77 on the held-out samples.)
    assert report.fidelity is not None and report.fidelity.outputs[0].cosine > 0.75
    for rate in (16000, 8000):
        feed = feeds(rate, 1, 64, seed=7)[0]
        before, now = first_output(model, feed, "y"), first_output(out, feed, "y")
        assert not np.array_equal(before, now)
        assert cosine(before, now) > 0.8, rate


def test_an_untaken_branch_stays_dense_and_is_reported(tmp_path: Path) -> None:
    model = builders.vad_model()
    path = builders.save(model, tmp_path / "vad.onnx")
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(
        path, feeds(16000, 8, 16, seed=1), sparsity=0.5, min_row_weights=0, output=out
    )
    # W_head is also read by the untaken else branch: left dense with it.
    assert layer_weights(report) == {THEN + "t_W1"}
    assert report.layers[0].sparsity == pytest.approx(0.5, abs=0.01)
    reasons = {s.name: s.reason for s in report.skipped}
    assert set(reasons) == {ELSE + "e_conv", ELSE + "e_fc", ELSE + "e_head", THEN + "t_head"}
    for name in (ELSE + "e_conv", ELSE + "e_fc", ELSE + "e_head"):
        assert "no calibration batch takes" in reasons[name], reasons[name]
    assert "W_head is also read in If switch else_branch" in reasons[THEN + "t_head"]
    pruned = onnx.load(out)
    before, after = tensors(model), tensors(pruned)
    for name in ("W_outer", "W_head", ELSE + "e_Wc", ELSE + "e_bc"):
        assert np.array_equal(before[name], after[name]), name
    assert np.mean(after[THEN + "t_W1"] == 0) == pytest.approx(0.5, abs=0.01)
    # The 8 kHz branch computes exactly what it did; the 16 kHz one stays close.
    narrow = feeds(8000, 1, 32, seed=9)[0]
    np.testing.assert_array_equal(first_output(model, narrow, "y"), first_output(out, narrow, "y"))
    wide = feeds(16000, 1, 32, seed=9)[0]
    assert cosine(first_output(model, wide, "y"), first_output(out, wide, "y")) > 0.9


@pytest.mark.parametrize("method", ["contrib", "wanda"])
def test_a_branch_is_pruned_as_its_specialised_copy_is(tmp_path: Path, method: str) -> None:
    """Statistics come from the batches that take the branch: pruning the If model gives the
    branch the very weights that pruning the model with the If replaced by that branch gives
    (W_head, also read by the untaken branch, excluded from both)."""
    model = builders.vad_model()
    flat = inline_if_branch(model, "switch", "then_branch")
    calib = feeds(16000, 6, 16, seed=1)
    weights = {}
    for name, proto in (("if", model), ("flat", flat)):
        path = tmp_path / f"{name}.onnx"
        onnx.save(proto, path)
        out = tmp_path / f"{name}.pruned.onnx"
        report = onnxprune.prune(
            path, calib, sparsity=0.5, method=method, exclude=["W_head"], output=out
        )
        assert layer_weights(report) == {THEN + "t_W1"}
        weights[name] = tensors(onnx.load(out))
    for tensor in ("t_W1", "t_b1"):
        np.testing.assert_array_equal(weights["if"][THEN + tensor], weights["flat"][THEN + tensor])
    assert not np.array_equal(weights["if"][THEN + "t_W1"], tensors(model)[THEN + "t_W1"])


def test_pruned_branches_equal_the_masked_original(tmp_path: Path) -> None:
    """Without compensation (wanda, no update), the pruned model is the original with the
    written zeros applied to its branch and outer weights, and nothing else changed."""
    model = builders.vad_model()
    path = builders.save(model, tmp_path / "vad.onnx")
    out = tmp_path / "out.onnx"
    calib = feeds(16000, 4, 16, seed=3) + feeds(8000, 4, 16, seed=4)
    onnxprune.prune(path, calib, sparsity=0.6, method="wanda", min_row_weights=0, output=out)
    pruned = onnx.load(out)
    zeros = {k: v == 0 for k, v in tensors(pruned).items()}
    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    graphs = [(masked.graph, "")]
    for attr in masked.graph.node[2].attribute:
        graphs.append((attr.g, f"switch/{attr.name}/"))
    for graph, prefix in graphs:
        for tensor in graph.initializer:
            value = numpy_helper.to_array(tensor)
            if value.dtype == np.float32:
                value = np.where(zeros[prefix + tensor.name], 0, value).astype(np.float32)
                tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    assert masked.SerializeToString() == pruned.SerializeToString()
    for rate in (16000, 8000):
        feed = feeds(rate, 1, 16, seed=5)[0]
        np.testing.assert_array_equal(
            first_output(masked, feed, "y"), first_output(pruned, feed, "y")
        )


def test_cli_run_reports_branch_layers_and_its_recipe_replays(tmp_path: Path) -> None:
    model = builders.vad_model()
    path = builders.save(model, tmp_path / "vad.onnx")
    calib_dir = tmp_path / "calib"
    calib_dir.mkdir()
    for k, feed in enumerate(feeds(16000, 3, 16, seed=1) + feeds(8000, 3, 16, seed=2)):
        np.savez(calib_dir / f"part{k}.npz", **feed)
    out, report_file = tmp_path / "out.onnx", tmp_path / "report.json"
    cli = [sys.executable, "-m", "onnxprune.cli"]
    done = subprocess.run(
        [*cli, str(path), "--calib", str(calib_dir), "--sparsity", "0.5", "-o", str(out),
         "--report", str(report_file), "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_file.read_text())
    assert {x["weight"] for x in report["layers"]} == {
        THEN + "t_W1",
        ELSE + "e_Wc",
        "W_outer",
        "W_head",
    }
    assert report["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    replay = tmp_path / "replay.onnx"
    again = subprocess.run(
        [*cli, str(path), "--calib", str(calib_dir), "--recipe", f"{out}.recipe.json",
         "-o", str(replay), "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert replay.read_bytes() == out.read_bytes()


def test_sequential_leaves_branch_layers_dense_with_a_reason(tmp_path: Path) -> None:
    model = builders.vad_model()
    path = builders.save(model, tmp_path / "vad.onnx")
    out = tmp_path / "out.onnx"
    calib = feeds(16000, 2, 16, seed=1) + feeds(8000, 2, 16, seed=2)
    report = onnxprune.prune(path, calib, sparsity=0.5, sequential=True, output=out)
    assert not report.layers
    assert all("--sequential" in s.reason for s in report.skipped)
    assert len(report.skipped) == 5


def test_structured_says_it_leaves_branch_units_and_weight_prunes_them(tmp_path: Path) -> None:
    path = builders.save(builders.vad_model(), tmp_path / "vad.onnx")
    calib = feeds(16000, 3, 16, seed=1) + feeds(8000, 3, 16, seed=2)
    report = onnxprune.prune(
        path, calib, structured=0.3, sparsity=0.5, min_row_weights=0, output=tmp_path / "o.onnx"
    )
    assert any("--structured removes no units inside If branches" in w for w in report.warnings)
    assert len(report.layers) == 4
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)


def test_big_model_mode_lists_branch_layers_as_skipped(tmp_path: Path) -> None:
    path = builders.save(builders.vad_model(), tmp_path / "vad.onnx")
    calib = feeds(16000, 2, 16, seed=1)
    pruner = Pruner(path, calib, PruneConfig(sparsity=0.5), big=True)
    try:
        assert pruner.layers == []
        reasons = {s.name: s.reason for s in pruner.scan.skipped}
        assert (
            reasons[THEN + "t_fc1"] == "inside If switch then_branch: not pruned in big-model mode"
        )
        assert len(reasons) == 5
    finally:
        pruner.close()


def test_nested_control_flow_stays_and_its_layers_are_listed(tmp_path: Path) -> None:
    model = builders.nested_if()
    path = builders.save(model, tmp_path / "nested.onnx")
    rng = np.random.default_rng(1)
    calib = stacked_flag_feeds(rng)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(path, calib, sparsity=0.5, min_row_weights=0, output=out)
    assert layer_weights(report) == {"outer/then_branch/D", "outer/else_branch/C"}
    reasons = {s.name: s.reason for s in report.skipped}
    assert set(reasons) == {"outer/then_branch/inner/then_branch/fc_A",
                            "outer/then_branch/inner/else_branch/fc_B"}  # fmt: skip
    assert all(
        "(nested in If outer; only the branches of a top-level If" in r for r in reasons.values()
    )
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    assert np.mean(tensors(pruned)["outer/then_branch/D"] == 0) > 0.1
    x = rng.standard_normal((4, 8)).astype(np.float32)
    for flag in (True, False):
        feed = {"x": x, "flag": np.array(flag)}
        assert cosine(first_output(model, feed, "y"), first_output(pruned, feed, "y")) > 0.7
    # The nested If (its weights A and B) is written back unchanged.
    inner = lambda m: next(a.g for a in m.graph.node[0].attribute if a.name == "then_branch")  # noqa: E731
    nested = [n for n in inner(pruned).node if n.op_type == "If"]
    assert len(nested) == 1
    assert (
        nested[0].SerializeToString()
        == next(n for n in inner(model).node if n.op_type == "If").SerializeToString()
    )


def test_an_outer_constant_node_read_in_a_branch_is_pruned_where_it_is_stored(
    tmp_path: Path,
) -> None:
    """y = If(flag, x @ K, x @ E) where K is a main-graph Constant node read in one branch."""
    rng = np.random.default_rng(2)
    model = builders.constant_in_branch(rng)
    value = builders.stored_weights(model)["K"]
    path = builders.save(model, tmp_path / "constant.onnx")
    calib = stacked_flag_feeds(rng)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(
        path, calib, sparsity=0.5, method="wanda", min_row_weights=0, output=out
    )
    assert layer_weights(report) == {"K", "pick/else_branch/E"}
    pruned = onnx.load(out)
    stored = numpy_helper.to_array(pruned.graph.node[0].attribute[0].t)
    assert np.mean(stored == 0) == pytest.approx(0.5)
    assert np.array_equal(stored != 0, value * (stored != 0) != 0)
    feed = {"x": rng.standard_normal((4, 8)).astype(np.float32), "flag": np.array(True)}
    np.testing.assert_allclose(
        first_output(pruned, feed, "y"), feed["x"] @ stored, rtol=1e-5, atol=1e-5
    )


def test_inspect_with_data_lists_and_measures_branch_layers(tmp_path: Path) -> None:
    path = builders.save(builders.vad_model(), tmp_path / "vad.onnx")
    calib = feeds(16000, 2, 16, seed=1) + feeds(8000, 2, 16, seed=2)
    alone = onnxprune.inspect_model(path)
    assert not alone.layers
    assert all("pruned by a run" in s.reason for s in alone.skipped)
    measured = onnxprune.inspect_model(path, calib)
    assert {x.weight for x in measured.layers} == {
        THEN + "t_W1",
        ELSE + "e_Wc",
        "W_outer",
        "W_head",
    }
    assert not measured.skipped
    gates = {x.weight: x.gate for x in measured.layers}
    assert gates[THEN + "t_W1"] == "relu" and gates["W_head"] == "none"
    for layer in measured.layers:
        assert layer.score_alone is not None and 0.0 < layer.score_alone < 1.0, layer.name


def test_a_2_4_run_prunes_branch_layers_and_check_pattern_reads_them(tmp_path: Path) -> None:
    path = builders.save(builders.vad_model(), tmp_path / "vad.onnx")
    calib = feeds(16000, 3, 16, seed=1) + feeds(8000, 3, 16, seed=2)
    out = tmp_path / "out.onnx"
    report = onnxprune.prune(path, calib, pattern="2:4", output=out)
    assert {x.weight for x in report.layers} == {THEN + "t_W1", ELSE + "e_Wc", "W_outer", "W_head"}
    assert all(x.sparsity == pytest.approx(0.5) for x in report.layers)
    before = onnxprune.check_pattern(path, "2:4")
    after = onnxprune.check_pattern(out, "2:4")
    assert len(after.layers) == len(before.layers) == 4
    assert after.exit_code == 0 and before.exit_code == 5
