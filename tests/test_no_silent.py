"""Nothing silent: patterns that match nothing, options a recipe overrides and runs with nothing
to prune warn on stderr; honest splits; discoverable help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from conftest import REPO, CliRunner
from onnx import numpy_helper

from onnxprune.calibrate.sources import model_input_specs, open_data


def mlp_case(tmp_path: Path, samples: int = 40) -> tuple[Path, Path]:
    model = builders.mlp_gemm()
    path, calib = builders.save_with_calibration(
        model, tmp_path, samples, name="mlp.onnx", calib="c.npz"
    )
    return path, calib


WARNING = "onnxprune: warning: "


def warnings_of(err: str) -> list[str]:
    """The warnings a CLI run printed on stderr."""
    return [line[len(WARNING) :] for line in err.splitlines() if line.startswith(WARNING)]


def test_unmatched_exclude_and_layer_patterns_warn(cli: CliRunner, tmp_path: Path) -> None:
    model, calib = mlp_case(tmp_path)
    result = cli(model, "--calib", calib, "--sparsity", 0.5, "-o", tmp_path / "o.onnx",
                 "--exclude", "fc_typo", "--exclude", "gemm0", "--layer", "nothing_here=0.3",
                 "--json")  # fmt: skip
    assert result.code == 0, result.err
    logged = warnings_of(result.err)
    assert any("--exclude 'fc_typo' matches no node or weight name" in w for w in logged)
    assert any("--layer 'nothing_here=0.3' matches no" in w for w in logged)
    assert not any("'gemm0'" in w for w in logged)  # it matched: no warning
    assert sum("matches no" in w for w in json.loads(result.out)["warnings"]) == 2


def test_recipe_overrides_given_options_with_a_warning(cli: CliRunner, tmp_path: Path) -> None:
    model, calib = mlp_case(tmp_path)
    first = tmp_path / "first.onnx"
    assert cli(model, "--calib", calib, "--sparsity", 0.6, "-o", first, "-q").code == 0
    recipe = Path(str(first) + ".recipe.json")
    second = tmp_path / "second.onnx"
    result = cli(model, "--calib", calib, "--recipe", recipe, "--sparsity", 0.5,
                 "--method", "wanda", "-o", second, "--json")  # fmt: skip
    assert result.code == 0, result.err
    logged = warnings_of(result.err)
    assert any(w.startswith("--sparsity 0.5 is ignored: --recipe") for w in logged), logged
    assert any(w.startswith("--method wanda is ignored") for w in logged), logged
    assert json.loads(result.out)["target_sparsity"] == pytest.approx(0.6)
    assert second.read_bytes() == first.read_bytes()


def test_nothing_to_prune_warns_and_writes_a_recipe(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.no_prunable()
    path, calib = builders.save_with_calibration(
        model, tmp_path, 16, name="plain.onnx", calib="c.npz"
    )
    out = tmp_path / "out.onnx"
    result = cli(path, "--calib", calib, "--sparsity", 0.5, "-o", out, "-q")
    assert result.code == 0
    assert any(w.startswith("nothing to prune") for w in warnings_of(result.err))
    recipe = json.loads(Path(str(out) + ".recipe.json").read_text())
    assert recipe["layers"] == {} and recipe["sparsity"] == 0.5
    replay = tmp_path / "replay.onnx"
    result = cli(path, "--calib", calib, "--recipe", str(out) + ".recipe.json", "-o", replay, "-q")
    assert result.code == 0 and replay.read_bytes() == path.read_bytes()


def test_warnings_reach_stderr_of_the_real_command(tmp_path: Path) -> None:
    """Outside pytest's log capture: ``python -m onnxprune`` prints the warning on stderr."""
    model, calib = mlp_case(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "onnxprune", str(model), "--calib", str(calib), "--sparsity",
         "0.5", "--exclude", "typo_layer", "-q", "-o", str(tmp_path / "o.onnx")],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "onnxprune: warning: --exclude 'typo_layer' matches no" in result.stderr
    assert result.stderr.count("typo_layer") == 1, "printed once"


def test_batched_pb_tensors_count_per_sample(tmp_path: Path) -> None:
    """4 test_data_set_* directories of 8 samples each are 32 samples (dynamic batch axis)."""
    model = builders.mlp_gemm()
    specs = model_input_specs(model)
    rng = np.random.default_rng(0)
    for k in range(4):
        folder = tmp_path / "data" / f"test_data_set_{k}"
        folder.mkdir(parents=True)
        tensor = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "x")
        (folder / "input_0.pb").write_bytes(tensor.SerializeToString())
    dataset = open_data(tmp_path / "data", specs)
    assert dataset.total == 32
    batches = list(dataset.batches(np.ones(32, dtype=bool), batch_size=32))
    assert sum(b.count for b in batches) == 32 and batches[0].feed["x"].shape[1:] == (16,)


def test_auto_search_and_report_use_disjoint_samples(cli: CliRunner, tmp_path: Path) -> None:
    model, calib = mlp_case(tmp_path, samples=200)
    result = cli(model, "--calib", calib, "--sparsity", "auto", "--min-cosine", 0.95, "-o",
                 tmp_path / "o.onnx", "--json")  # fmt: skip
    report = json.loads(result.out)
    # The search measured on calibration samples; the final number on the held-out ones.
    assert {p["samples"] for p in report["curve"]} == {"10 search (held-out)"}
    assert report["fidelity"]["source"] == "held-out"
    assert report["fidelity"]["samples"] + report["calibration_samples"] + 10 == 200
    assert report["fidelity"]["samples"] > 0


def test_replay_keeps_the_recorded_split_whatever_eval_is(cli: CliRunner, tmp_path: Path) -> None:
    model, calib = mlp_case(tmp_path, samples=100)
    first = tmp_path / "first.onnx"
    assert cli(model, "--calib", calib, "--sparsity", 0.5, "-o", first, "-q").code == 0
    recipe = Path(str(first) + ".recipe.json")
    assert json.loads(recipe.read_text())["held_out"] is True
    evaluation = builders.write_npz(
        tmp_path / "e.npz", builders.random_inputs(builders.mlp_gemm(), 30, seed=5)
    )
    second = tmp_path / "second.onnx"
    result = cli(model, "--calib", calib, "--recipe", recipe, "--eval", evaluation, "-o",
                 second, "--json")  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    first_report = cli(model, "--calib", calib, "--sparsity", 0.5, "-o", tmp_path / "t.onnx",
                       "--json")  # fmt: skip
    assert report["calibration_samples"] == json.loads(first_report.out)["calibration_samples"]
    assert report["fidelity"]["source"] == "--eval" and report["fidelity"]["samples"] == 30
    assert second.read_bytes() == first.read_bytes()
    assert "fingerprint" not in " ".join(report["warnings"])


def test_help_is_grouped_and_lists_every_subcommand(cli: CliRunner) -> None:
    result = cli("--help")
    assert result.code == 0
    sections = ["Basics:", "Calibration data:", "Method:", "Structure:", "Gates and search:",
                "Output:", "Commands:"]  # fmt: skip
    positions = [result.out.index(f"\n{name}\n") for name in sections]
    assert positions == sorted(positions)
    basics = result.out[positions[0] : positions[1]]
    assert "--calib" in basics and "--sparsity" in basics and "--output" in basics
    assert "--tokenizer" in result.out[positions[1] : positions[2]]
    assert "--min-cosine" in result.out[positions[4] : positions[5]]
    commands = result.out[positions[6] :]
    assert "inspect" in commands and "check-pattern" in commands
    for option in ("--json", "--plot", "--report", "--verbose", "--quiet"):
        assert option in result.out[positions[5] : positions[6]]


def test_python_dash_m_and_completion(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    version = subprocess.run([sys.executable, "-m", "onnxprune", "--version"], capture_output=True,
                             text=True, env=env, timeout=60, check=False)  # fmt: skip
    assert version.returncode == 0 and "version" in version.stdout
    script = subprocess.run([sys.executable, "-m", "onnxprune"], capture_output=True, text=True,
                            env={**env, "_ONNXPRUNE_COMPLETE": "bash_source"}, timeout=60,
                            check=False)  # fmt: skip
    assert script.returncode == 0 and "complete -o nosort -F" in script.stdout
    words = subprocess.run(
        [sys.executable, "-m", "onnxprune"], capture_output=True, text=True, timeout=60,
        env={**env, "_ONNXPRUNE_COMPLETE": "bash_complete", "COMP_WORDS": "onnxprune --spars",
             "COMP_CWORD": "1"}, check=False,
    )  # fmt: skip
    assert words.returncode == 0 and "--sparsity" in words.stdout


def test_sparsity_percent_gets_a_hint(cli: CliRunner, tmp_path: Path) -> None:
    model, calib = mlp_case(tmp_path)
    result = cli(model, "--calib", calib, "--sparsity", 80, "-o", tmp_path / "o.onnx")
    assert result.code == 2 and "did you mean 0.8?" in result.err
    assert not (tmp_path / "o.onnx").exists()
    assert onnx.load(str(model)) is not None


def _colour_pixels(png: Path, rgb: tuple[int, int, int], left_half: bool = True) -> int:
    from PIL import Image

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    if left_half:
        pixels = pixels[:, : pixels.shape[1] // 2]
    return int((np.abs(pixels - np.array(rgb)).sum(axis=2) < 30).sum())


def test_plot_draws_dense_reference_and_gate_lines(cli: CliRunner, tmp_path: Path) -> None:
    """Read the PNG back: the gate line (tab:orange) appears only when a gate is set, the
    dense reference (tab:green) always."""
    model, calib = mlp_case(tmp_path, samples=60)
    orange, green = (255, 127, 14), (44, 160, 44)
    gated, plain = tmp_path / "gated.png", tmp_path / "plain.png"
    result = cli(model, "--calib", calib, "--sparsity", 0.5, "--sweep", "0.3,0.7", "--min-cosine",
                 0.5, "-o", tmp_path / "a.onnx", "--plot", gated, "-q")  # fmt: skip
    assert result.code == 0, result.err
    result = cli(model, "--calib", calib, "--sparsity", 0.5, "--sweep", "0.3,0.7",
                 "-o", tmp_path / "b.onnx", "--plot", plain, "-q")  # fmt: skip
    assert result.code == 0, result.err
    assert _colour_pixels(gated, orange) > 300  # a dashed line across the panel
    assert _colour_pixels(plain, orange) == 0
    assert _colour_pixels(plain, green) > 300 and _colour_pixels(gated, green) > 300


def test_only_gathers_from_stored_tables_are_listed_as_embedding_tables() -> None:
    # [tokens] -> embedding [V, D] -> MatMul [D, D]; beside it the exporters' shape arithmetic:
    # Gather(Shape(x), constant index), which holds no weight and must not be listed.
    from onnxprune.config import PruneConfig
    from onnxprune.graph import GraphView
    from onnxprune.layers import find_layers

    rng = np.random.default_rng(0)
    h = onnx.helper
    model = builders.finish(
        "g",
        [
            h.make_node("Gather", ["table", "tokens"], ["embedded"], name="embed"),
            h.make_node("MatMul", ["embedded", "w"], ["y"], name="proj"),
            h.make_node("Shape", ["y"], ["shape"], name="shape"),
            h.make_node("Gather", ["shape", "zero"], ["batch"], name="batch_size"),
        ],
        [builders.value_info("tokens", ["b", "s"], builders.INT64)],
        [
            builders.value_info("y", ["b", "s", 8]),
            builders.value_info("batch", [], builders.INT64),
        ],
        {
            "table": rng.standard_normal((50, 8)).astype(np.float32),
            "w": rng.standard_normal((8, 8)).astype(np.float32),
            "zero": np.array(0, dtype=np.int64),
        },
        ir_version=onnx.IR_VERSION,
        producer="",
    )
    scan = find_layers(GraphView(model), PruneConfig(sparsity=0.5))
    assert [layer.weight_name for layer in scan.layers] == ["w"]
    assert [(s.name, s.op_type) for s in scan.skipped] == [("embed", "Gather")]
