"""Fidelity gates, sparsity search, sweeps, recipes, inspect, plots and Python data sources."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from conftest import EXAMPLE_CALIB, EXAMPLE_CNN, REPO, CliRunner

import onnxprune
from onnxprune.errors import EXIT_GATE_FAILED, EXIT_USAGE

TEST = REPO / "calibration_data" / "digits_test.npz"


def _run(cli: CliRunner, tmp_path: Path, *args: object) -> tuple[int, dict, str, Path]:
    output, report = tmp_path / "out.onnx", tmp_path / "report.json"
    result = cli(
        EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "-o", output, "--report", report, "-q", *args
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return result.code, data, result.err, output


# -- gates ------------------------------------------------------------------------------------

GATES = [
    ("--min-cosine", 0.5, 0.999999),
    ("--min-top1", 0.5, 0.999999),
    ("--max-abs-error", 1e6, 1e-9),
]


@pytest.mark.parametrize(("option", "passing", "failing"), GATES)
def test_gate_pass_and_fail(
    cli: CliRunner, tmp_path: Path, option: str, passing: float, failing: float
) -> None:
    code, report, err, output = _run(cli, tmp_path, "--sparsity", 0.8, option, passing)
    assert code == 0 and output.exists() and report["gate_failures"] == []
    recipe = Path(str(output) + ".recipe.json")
    assert recipe.exists()
    output.unlink()
    recipe.unlink()

    # The default keeps top-1 agreement at 1.0 at 0.8 on this model: fail at 0.97.
    code, report, err, output = _run(cli, tmp_path, "--sparsity", 0.97, option, failing)
    assert code == EXIT_GATE_FAILED
    assert not output.exists(), "a failed gate keeps no output"
    assert not recipe.exists()
    failure = report["gate_failures"][0]
    assert failure["output"] == "logits" and failure["option"] == option
    assert err.count("\n") == 1 and "logits" in err and option in err and "Traceback" not in err
    assert report["output_written"] is False


def test_accuracy_drop_gate_with_labels(cli: CliRunner, tmp_path: Path) -> None:
    code, report, err, output = _run(
        cli, tmp_path, "--sparsity", 0.9, "--eval", TEST, "--max-accuracy-drop", 0.0
    )
    assert "accuracy drop" in err
    drop = report["fidelity"]["accuracy_original"] - report["fidelity"]["accuracy_pruned"]
    assert drop > 0 and code == EXIT_GATE_FAILED and not output.exists()
    assert report["gate_failures"][0]["value"] == pytest.approx(drop)

    code, report, _, output = _run(
        cli, tmp_path, "--sparsity", 0.9, "--eval", TEST, "--max-accuracy-drop", 0.5
    )
    assert code == 0 and output.exists()


def test_keep_on_fail_keeps_the_model_and_still_exits_5(cli: CliRunner, tmp_path: Path) -> None:
    code, report, err, output = _run(
        cli, tmp_path, "--sparsity", 0.9, "--min-cosine", 0.9999, "--keep-on-fail"
    )
    assert code == EXIT_GATE_FAILED
    assert output.exists() and report["output_written"] is True
    onnx.checker.check_model(str(output), full_check=True)
    assert "output kept" in err


def test_accuracy_gate_without_labels_is_a_usage_error(cli: CliRunner, tmp_path: Path) -> None:
    code, _, err, output = _run(cli, tmp_path, "--sparsity", 0.5, "--max-accuracy-drop", 0.01)
    assert code == EXIT_USAGE and "labels" in err and not output.exists()


# -- search and sweep ---------------------------------------------------------------------------


def test_search_finds_a_passing_sparsity_one_step_below_a_failing_one(
    cli: CliRunner, tmp_path: Path
) -> None:
    code, report, _, output = _run(
        cli, tmp_path, "--sparsity", "auto", "--min-cosine", 0.97, "--keep-on-fail"
    )
    assert output.exists()
    chosen = report["target_sparsity"]
    points = {round(p["sparsity"], 6): p for p in report["curve"]}
    assert points[round(chosen, 6)]["passes"] is True
    above = points[round(chosen + 0.01, 6)]
    assert above["passes"] is False and above["cosine"] < 0.97
    # The search measured on half of the held-out samples, the report on the other half: an
    # honest estimate, which may fall on either side of the gate (exit 5 below it).
    assert {p["samples"] for p in report["curve"]} == {"68 search (held-out)"}
    assert report["fidelity"]["samples"] == 67
    assert code == (0 if report["fidelity"]["outputs"][0]["cosine"] >= 0.97 else 5)
    assert abs(report["achieved_sparsity"] - chosen) < 0.005
    recipe = json.loads(Path(str(output) + ".recipe.json").read_text())
    assert recipe["sparsity"] == pytest.approx(chosen)


def test_search_needs_a_gate(cli: CliRunner, tmp_path: Path) -> None:
    code, _, err, output = _run(cli, tmp_path, "--sparsity", "auto")
    assert code == EXIT_USAGE and "gate" in err and not output.exists()


def test_sweep_measures_each_point_and_the_chosen_one(cli: CliRunner, tmp_path: Path) -> None:
    code, report, _, _ = _run(cli, tmp_path, "--sparsity", 0.6, "--sweep", "0.3,0.9")
    assert code == 0
    curve = {p["sparsity"]: p["cosine"] for p in report["curve"]}
    assert set(curve) == {0.3, 0.6, 0.9}
    assert curve[0.3] > curve[0.9]
    assert curve[0.6] == pytest.approx(report["fidelity"]["outputs"][0]["cosine"])


def test_a_sweep_never_changes_the_model_it_writes(cli: CliRunner, tmp_path: Path) -> None:
    """--sweep only observes: the written model is byte-identical with and without it (the
    default sensitivity allocation runs in both)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    code, report, _, output = _run(cli, plain, "--sparsity", 0.8)
    assert code == 0 and report["arguments"]["allocation"] == "sensitivity"
    swept = tmp_path / "swept"
    swept.mkdir()
    code, report, _, swept_output = _run(cli, swept, "--sparsity", 0.8, "--sweep", "0.5,0.9")
    assert code == 0 and report["arguments"]["allocation"] == "sensitivity"
    assert swept_output.read_bytes() == output.read_bytes()


# -- recipes ----------------------------------------------------------------------------------


def test_recipe_replay_is_byte_identical(cli: CliRunner, tmp_path: Path) -> None:
    first = tmp_path / "first.onnx"
    result = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--sparsity", 0.7, "-o", first, "-q")
    assert result.code == 0
    recipe = Path(str(first) + ".recipe.json")
    data = json.loads(recipe.read_text())
    assert data["calibration_fingerprint"] and set(data["layers"]) == {
        "conv1.weight",
        "conv2.weight",
        "fc1.weight",
        "fc2.weight",
    }
    second = tmp_path / "second.onnx"
    result = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--recipe", recipe, "-o", second, "--json")
    assert result.code == 0
    assert second.read_bytes() == first.read_bytes()
    assert json.loads(result.out)["warnings"] == []


def test_recipe_with_other_data_warns(cli: CliRunner, tmp_path: Path) -> None:
    first = tmp_path / "first.onnx"
    assert (
        cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--sparsity", 0.5, "-o", first, "-q").code == 0
    )
    other = tmp_path / "other.npz"
    data = np.load(EXAMPLE_CALIB / "digits_calib.npz")["input"][:200]
    np.savez(other, input=data)
    result = cli(EXAMPLE_CNN, "--calib", other, "--recipe", str(first) + ".recipe.json", "-o",
                 tmp_path / "second.onnx", "--json")  # fmt: skip
    assert result.code == 0
    assert any("fingerprint" in w for w in json.loads(result.out)["warnings"])


def test_malformed_recipe_is_a_usage_error(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.recipe.json"
    bad.write_text("{}")
    result = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--recipe", bad, "-o", tmp_path / "o.onnx")
    assert result.code == EXIT_USAGE and "recipe" in result.err
    assert not (tmp_path / "o.onnx").exists()


# -- inspect ----------------------------------------------------------------------------------


def test_inspect_lists_layers_of_the_bundled_example(cli: CliRunner) -> None:
    result = cli("inspect", EXAMPLE_CNN)
    assert result.code == 0
    for name in ("/conv1/Conv", "/conv2/Conv", "/fc1/Gemm", "/fc2/Gemm"):
        assert name in result.out
    assert "4 prunable layers, 38,160 weights" in result.out
    assert "initializer" in result.out and "relu" in result.out


def test_inspect_with_data_measures_sensitivity(cli: CliRunner) -> None:
    result = cli("inspect", EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--json", "-q")
    assert result.code == 0
    layers = {layer["name"]: layer for layer in json.loads(result.out)["layers"]}
    cosines = [layer["cosine_alone"] for layer in layers.values()]
    assert all(0.5 < c <= 1.0 + 1e-9 for c in cosines)
    # The stem conv (9 weights per filter) is the most sensitive layer of this network.
    assert min(layers, key=lambda n: layers[n]["cosine_alone"]) == "/conv1/Conv"


def test_inspect_reports_skipped_weights(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.transformer_block()
    path = builders.save(model, tmp_path / "block.onnx")
    result = cli("inspect", path, "--json")
    assert result.code == 0
    report = json.loads(result.out)
    assert {layer["gate"] for layer in report["layers"]} >= {"gelu", "none"}


def test_inspect_missing_model_is_one_line(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("inspect", tmp_path / "nope.onnx")
    assert result.code == 3 and result.err.count("\n") == 1 and "not found" in result.err


# -- plot -------------------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def test_plot_writes_a_png_of_the_expected_size(cli: CliRunner, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curve.png"
    code, report, _, _ = _run(
        cli, tmp_path, "--sparsity", 0.8, "--sweep", "0.5,0.9", "--plot", plot
    )
    assert code == 0
    # figsize 12 x 4 inches at 100 dpi (4 layers need less than the 4-inch minimum)
    assert _png_size(plot) == (1200, 400)
    assert len(report["curve"]) == 3


# -- report extras and Python sources -----------------------------------------------------------


def test_report_has_op_counts_with_differences(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.mlp_matmul()
    # Drop the first bias Add so that compensation has to insert one.
    path, calib = builders.save_with_calibration(
        model, tmp_path, 64, seed=0, name="mlp.onnx", calib="c.npz"
    )
    result = cli(path, "--calib", calib, "--sparsity", 0.5, "-o", tmp_path / "o.onnx", "--json")
    report = json.loads(result.out)
    assert report["op_counts"]["MatMul"] == [3, 3]
    assert all(len(v) == 2 for v in report["op_counts"].values())


def test_python_generator_source_streams_each_pass(tmp_path: Path) -> None:
    model = builders.mlp_gemm()
    path = builders.save(model, tmp_path / "mlp.onnx")
    batches = [builders.random_inputs(model, 16, seed=s) for s in range(6)]
    passes = []

    def loader() -> Iterator[dict[str, np.ndarray]]:
        passes.append(1)
        yield from batches

    report = onnxprune.prune(path, loader, sparsity=0.5, output=tmp_path / "o.onnx")
    from_file = onnxprune.prune(
        path,
        builders.write_npz(tmp_path / "all.npz", {"x": np.concatenate([b["x"] for b in batches])}),
        sparsity=0.5,
        output=tmp_path / "o2.onnx",
    )
    assert len(passes) >= 3  # validation, calibration, verification: no data kept between
    assert report.calibration_samples == from_file.calibration_samples == 96 - 10
    # Same samples in other batches: the sums differ only by float rounding.
    streamed = builders.stored_weights(onnx.load(str(tmp_path / "o.onnx")))
    loaded = builders.stored_weights(onnx.load(str(tmp_path / "o2.onnx")))
    assert streamed.keys() == loaded.keys()
    for name, weight in streamed.items():
        np.testing.assert_allclose(weight, loaded[name], rtol=1e-4, atol=1e-6)


# -- check-pattern ------------------------------------------------------------------------------


def test_check_pattern_accepts_a_2_4_model_and_rejects_the_dense_one(
    cli: CliRunner, tmp_path: Path
) -> None:
    output = tmp_path / "p24.onnx"
    assert (
        cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--pattern", "2:4", "-o", output, "-q").code == 0
    )
    result = cli("check-pattern", output, "--json")
    assert result.code == 0
    report = json.loads(result.out)
    assert report["all_conform"] and all(layer["ok"] for layer in report["layers"])
    dense = cli("check-pattern", EXAMPLE_CNN)
    assert dense.code == EXIT_GATE_FAILED and "NOT every layer conforms" in dense.out
    bad = cli("check-pattern", EXAMPLE_CNN, "--pattern", "unstructured")
    assert bad.code == EXIT_USAGE and "N:M" in bad.err
