"""Bad models, bad data and bad options: a documented exit code, one error line, no output.

Every case runs ``onnxprune.cli.main`` with ``-o`` and ``--report`` pointing into an empty
directory and checks that the directory is still empty afterwards (no model, no report, no
``.onnxprune-*`` staging directory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from conftest import CliResult, CliRunner

from onnxprune.errors import EXIT_BAD_INPUT, EXIT_USAGE, EXIT_WRITE_FAILED

SAMPLES = 64


@dataclass(frozen=True)
class Setup:
    inputs: Path  # directory holding the models and data
    model: Path  # mlp_gemm: x float32[batch,16]
    cnn: Path  # cnn_bn: x float32[batch,3,8,8]
    calib: Path  # valid calibration data for ``model``
    x: np.ndarray  # the samples in ``calib``
    out_dir: Path  # empty directory for the output model and the report
    output: Path
    report: Path

    def npz(self, name: str, **arrays: np.ndarray) -> Path:
        return builders.write_npz(self.inputs / f"{name}.npz", arrays)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    model = builders.mlp_gemm()
    x = builders.random_inputs(model, SAMPLES, seed=1)["x"]
    return Setup(
        inputs=inputs,
        model=builders.save(model, inputs / "mlp.onnx"),
        cnn=builders.save(builders.cnn_bn(), inputs / "cnn.onnx"),
        calib=builders.write_npz(inputs / "calib.npz", {"x": x}),
        x=x,
        out_dir=out_dir,
        output=out_dir / "pruned.onnx",
        report=out_dir / "report.json",
    )


def run(cli: CliRunner, s: Setup, model: Path, calib: Path, *options: object) -> CliResult:
    """The CLI with -o and --report into ``s.out_dir``; ``options`` may add or override."""
    args: list[object] = [model, "--calib", calib, *options]
    if "-o" not in options:
        args += ["-o", s.output]
    return cli(*args, "--report", s.report)


def assert_clean_failure(result: CliResult, code: int, *words: str, out_dir: Path) -> str:
    """Exit ``code``, exactly one ``onnxprune: error:`` line naming ``words``, nothing written.

    Returns the error line.
    """
    assert result.code == code, result.err
    assert result.err.endswith("\n") and result.err.count("\n") == 1, repr(result.err)
    line = result.err.rstrip("\n")
    assert line.startswith("onnxprune: error: "), line
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    assert "Traceback" not in result.err and "Traceback" not in result.out
    assert result.out == ""
    assert sorted(p.name for p in out_dir.iterdir()) == []
    return line


# ---------------------------------------------------------------------------------------------
# The model


def test_missing_model(cli: CliRunner, setup: Setup) -> None:
    result = run(cli, setup, setup.inputs / "absent.onnx", setup.calib, "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "not found", "absent.onnx", out_dir=setup.out_dir)


def test_directory_as_model(cli: CliRunner, setup: Setup) -> None:
    folder = setup.inputs / "folder.onnx"
    folder.mkdir()
    result = run(cli, setup, folder, setup.calib, "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "directory", out_dir=setup.out_dir)


def test_empty_model_file(cli: CliRunner, setup: Setup) -> None:
    empty = setup.inputs / "empty.onnx"
    empty.touch()
    result = run(cli, setup, empty, setup.calib, "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "empty", out_dir=setup.out_dir)


def test_truncated_model(cli: CliRunner, setup: Setup) -> None:
    data = setup.model.read_bytes()
    truncated = setup.inputs / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    result = run(cli, setup, truncated, setup.calib, "--sparsity", 0.5)
    assert_clean_failure(
        result, EXIT_BAD_INPUT, "truncated.onnx", "not a valid onnx model", out_dir=setup.out_dir
    )


def test_random_bytes_model(cli: CliRunner, setup: Setup) -> None:
    noise = setup.inputs / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    result = run(cli, setup, noise, setup.calib, "--sparsity", 0.5)
    assert_clean_failure(
        result, EXIT_BAD_INPUT, "noise.onnx", "not a valid onnx model", out_dir=setup.out_dir
    )


def test_model_with_missing_external_data(cli: CliRunner, setup: Setup) -> None:
    folder = setup.inputs / "external"
    folder.mkdir()
    model_path = folder / "ext.onnx"
    onnx.save_model(
        builders.mlp_gemm(),
        str(model_path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    (folder / "ext.onnx.data").unlink()
    result = run(cli, setup, model_path, setup.calib, "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "ext.onnx", out_dir=setup.out_dir)


# ---------------------------------------------------------------------------------------------
# Calibration data


def test_missing_calibration_path(cli: CliRunner, setup: Setup) -> None:
    result = run(cli, setup, setup.model, setup.inputs / "absent.npz", "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "not found", "absent.npz", out_dir=setup.out_dir)


def test_calibration_missing_input_name(cli: CliRunner, setup: Setup) -> None:
    calib = setup.npz("renamed", pixels=setup.x)
    result = run(cli, setup, setup.model, calib, "--sparsity", 0.5)
    line = assert_clean_failure(result, EXIT_BAD_INPUT, "missing", out_dir=setup.out_dir)
    assert re.search(r"\bx\b", line.replace(str(calib), "")), line  # names the model input


def test_calibration_extra_input_name(cli: CliRunner, setup: Setup) -> None:
    calib = setup.npz("extra", x=setup.x, bogus=setup.x)
    result = run(cli, setup, setup.model, calib, "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "bogus", out_dir=setup.out_dir)


def test_calibration_wrong_dtype(cli: CliRunner, setup: Setup) -> None:
    calib = setup.npz("doubles", x=setup.x.astype(np.float64))
    result = run(cli, setup, setup.model, calib, "--sparsity", 0.5)
    assert_clean_failure(
        result, EXIT_BAD_INPUT, "dtype", "float64", "float32", out_dir=setup.out_dir
    )


def test_calibration_wrong_rank(cli: CliRunner, setup: Setup) -> None:
    images = np.zeros((8, 3, 64), dtype=np.float32)  # flattened 8x8 images: rank 3, not 4
    calib = setup.npz("flat", x=images)
    result = run(cli, setup, setup.cnn, calib, "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "'x'", "shape", out_dir=setup.out_dir)


def test_calibration_wrong_static_dim(cli: CliRunner, setup: Setup) -> None:
    images = np.zeros((8, 3, 9, 9), dtype=np.float32)  # the model takes 8x8
    calib = setup.npz("nine", x=images)
    result = run(cli, setup, setup.cnn, calib, "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "'x'", "shape", "9, 9", out_dir=setup.out_dir)


def test_calibration_nan(cli: CliRunner, setup: Setup) -> None:
    x = setup.x.copy()
    x[5, 3] = np.nan
    result = run(cli, setup, setup.model, setup.npz("nan", x=x), "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "nan", "'x'", "sample 5", out_dir=setup.out_dir)


def test_calibration_nan_in_held_out_sample(cli: CliRunner, setup: Setup) -> None:
    # With --seed 0 the first sample of this permutation is held out for the fidelity check,
    # which runs after the pruned model is staged: the staging directory must still go away.
    held_out = int(np.random.default_rng(0).permutation(SAMPLES)[0])
    x = setup.x.copy()
    x[held_out, 0] = np.nan
    result = run(cli, setup, setup.model, setup.npz("late_nan", x=x), "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "nan", f"sample {held_out}", out_dir=setup.out_dir)


def test_calibration_inf(cli: CliRunner, setup: Setup) -> None:
    x = setup.x.copy()
    x[40, 0] = -np.inf
    result = run(cli, setup, setup.model, setup.npz("inf", x=x), "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "inf", "'x'", out_dir=setup.out_dir)


def test_calibration_zero_samples(cli: CliRunner, setup: Setup) -> None:
    calib = setup.npz("none", x=np.zeros((0, 16), dtype=np.float32))
    result = run(cli, setup, setup.model, calib, "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "zero samples", out_dir=setup.out_dir)


def test_calibration_corrupt_npz(cli: CliRunner, setup: Setup) -> None:
    corrupt = setup.inputs / "corrupt.npz"
    corrupt.write_bytes(np.random.default_rng(1).bytes(1000))
    result = run(cli, setup, setup.model, corrupt, "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_BAD_INPUT, "corrupt.npz", "npz", out_dir=setup.out_dir)


# ---------------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_sparsity_out_of_range(cli: CliRunner, setup: Setup, value: str) -> None:
    result = run(cli, setup, setup.model, setup.calib, "--sparsity", value)
    assert_clean_failure(result, EXIT_USAGE, "--sparsity", value, out_dir=setup.out_dir)


def test_sparsity_missing(cli: CliRunner, setup: Setup) -> None:
    result = run(cli, setup, setup.model, setup.calib)
    assert_clean_failure(result, EXIT_USAGE, "--sparsity", "required", out_dir=setup.out_dir)


def test_pattern_n_not_below_m(cli: CliRunner, setup: Setup) -> None:
    result = run(cli, setup, setup.model, setup.calib, "--pattern", "3:2")
    assert_clean_failure(result, EXIT_USAGE, "--pattern", "3:2", out_dir=setup.out_dir)


def test_pattern_not_a_pattern(cli: CliRunner, setup: Setup) -> None:
    result = run(cli, setup, setup.model, setup.calib, "--pattern", "banana", "--sparsity", 0.5)
    assert_clean_failure(result, EXIT_USAGE, "--pattern", "banana", out_dir=setup.out_dir)


def test_pattern_contradicts_sparsity(cli: CliRunner, setup: Setup) -> None:
    result = run(cli, setup, setup.model, setup.calib, "--pattern", "2:4", "--sparsity", 0.8)
    assert_clean_failure(
        result, EXIT_USAGE, "--pattern", "--sparsity", "0.8", out_dir=setup.out_dir
    )


def test_unknown_method(cli: CliRunner, setup: Setup) -> None:
    result = run(cli, setup, setup.model, setup.calib, "--sparsity", 0.5, "--method", "banana")
    assert_clean_failure(result, EXIT_USAGE, "--method", "banana", out_dir=setup.out_dir)


def test_output_is_the_input(cli: CliRunner, setup: Setup) -> None:
    original = setup.model.read_bytes()
    listing = sorted(p.name for p in setup.inputs.iterdir())
    result = run(cli, setup, setup.model, setup.calib, "--sparsity", 0.5, "-o", setup.model)
    assert_clean_failure(result, EXIT_USAGE, "input", out_dir=setup.out_dir)
    assert setup.model.read_bytes() == original
    assert sorted(p.name for p in setup.inputs.iterdir()) == listing


def test_output_directory_missing(cli: CliRunner, setup: Setup) -> None:
    target = setup.out_dir / "absent" / "pruned.onnx"
    result = run(cli, setup, setup.model, setup.calib, "--sparsity", 0.5, "-o", target)
    assert_clean_failure(result, EXIT_WRITE_FAILED, "does not exist", out_dir=setup.out_dir)


def test_exclude_invalid_regex(cli: CliRunner, setup: Setup) -> None:
    result = run(cli, setup, setup.model, setup.calib, "--sparsity", 0.5, "--exclude", "(")
    assert_clean_failure(result, EXIT_USAGE, "--exclude", "regex", out_dir=setup.out_dir)


def test_batch_size_zero(cli: CliRunner, setup: Setup) -> None:
    result = run(cli, setup, setup.model, setup.calib, "--sparsity", 0.5, "--batch-size", 0)
    assert_clean_failure(result, EXIT_USAGE, "--batch-size", out_dir=setup.out_dir)


# ---------------------------------------------------------------------------------------------
# --report must obey the same rules as -o


def test_report_is_the_input(cli: CliRunner, setup: Setup) -> None:
    original = setup.model.read_bytes()
    result = cli(
        setup.model, "--calib", setup.calib, "--sparsity", 0.5, "-o", setup.output,
        "--report", setup.model,
    )  # fmt: skip
    assert setup.model.read_bytes() == original
    assert_clean_failure(result, EXIT_USAGE, "--report", out_dir=setup.out_dir)


def test_report_is_the_output(cli: CliRunner, setup: Setup) -> None:
    result = cli(
        setup.model, "--calib", setup.calib, "--sparsity", 0.5, "-o", setup.output,
        "--report", setup.output,
    )  # fmt: skip
    assert_clean_failure(result, EXIT_USAGE, "--report", out_dir=setup.out_dir)


def test_report_directory_missing(cli: CliRunner, setup: Setup) -> None:
    result = cli(
        setup.model, "--calib", setup.calib, "--sparsity", 0.5, "-o", setup.output,
        "--report", setup.out_dir / "absent" / "report.json",
    )  # fmt: skip
    assert_clean_failure(result, EXIT_WRITE_FAILED, "absent", out_dir=setup.out_dir)


# ---------------------------------------------------------------------------------------------
# No output, report, plot or recipe path may hit a file the run reads (issue 12)


def _external_model(folder: Path) -> Path:
    path = folder / "ext.onnx"
    onnx.save_model(
        builders.mlp_gemm(), str(path), save_as_external_data=True,
        all_tensors_to_one_file=True, location="weights.bin", size_threshold=0,
    )  # fmt: skip
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_is_the_input_external_data(cli: CliRunner, setup: Setup) -> None:
    model = _external_model(setup.inputs)
    before = _snapshot(setup.inputs)
    for option in ("-o", "--report"):
        target = setup.inputs / "weights.bin"
        args = [model, "--calib", setup.calib, "--sparsity", 0.5]
        if option == "-o":
            result = cli(*args, "-o", target)
        else:
            result = cli(*args, "-o", setup.output, "--report", target)
        assert_clean_failure(result, EXIT_USAGE, option, "external data", out_dir=setup.out_dir)
    assert _snapshot(setup.inputs) == before


def test_output_external_data_would_replace_the_input_external_data(
    cli: CliRunner, setup: Setup
) -> None:
    # -o weights.onnx writes weights.onnx.data beside it: here that is the input's data file.
    model = setup.inputs / "m.onnx"
    onnx.save_model(
        builders.mlp_gemm(), str(model), save_as_external_data=True,
        all_tensors_to_one_file=True, location="w.onnx.data", size_threshold=0,
    )  # fmt: skip
    before = _snapshot(setup.inputs)
    result = cli(model, "--calib", setup.calib, "--sparsity", 0.5, "-o", setup.inputs / "w.onnx")
    assert result.code == EXIT_USAGE and "external data" in result.err, result.err
    assert _snapshot(setup.inputs) == before


def test_output_inside_the_calibration_directory(cli: CliRunner, setup: Setup) -> None:
    folder = setup.inputs / "calib_dir"
    folder.mkdir()
    builders.write_npz(folder / "a.npz", {"x": setup.x[:32]})
    builders.write_npz(folder / "b.npz", {"x": setup.x[32:]})
    before = _snapshot(folder)
    result = run(cli, setup, setup.model, folder, "--sparsity", 0.5, "-o", folder / "b.npz")
    assert_clean_failure(result, EXIT_USAGE, "calibration data", "b.npz", out_dir=setup.out_dir)
    assert _snapshot(folder) == before


def test_output_is_a_hard_link_to_the_input(cli: CliRunner, setup: Setup) -> None:
    alias = setup.out_dir.parent / "alias.onnx"
    alias.hardlink_to(setup.model)
    before = setup.model.read_bytes()
    result = run(cli, setup, setup.model, setup.calib, "--sparsity", 0.5, "-o", alias)
    assert_clean_failure(result, EXIT_USAGE, "input model", out_dir=setup.out_dir)
    assert setup.model.read_bytes() == before


def test_plot_is_the_evaluation_data(cli: CliRunner, setup: Setup) -> None:
    pytest.importorskip("matplotlib")
    held = setup.npz("held", x=setup.x[:16])
    before = held.read_bytes()
    result = run(
        cli, setup, setup.model, setup.calib, "--sparsity", 0.5, "--eval", held, "--plot", held
    )
    assert_clean_failure(result, EXIT_USAGE, "--plot", "evaluation data", out_dir=setup.out_dir)
    assert held.read_bytes() == before


def test_report_or_recipe_would_replace_the_replayed_recipe(cli: CliRunner, setup: Setup) -> None:
    first = setup.inputs / "first.onnx"
    assert cli(setup.model, "--calib", setup.calib, "--sparsity", 0.5, "-o", first).code == 0
    recipe = setup.inputs / "first.onnx.recipe.json"
    before = recipe.read_bytes()
    result = run(cli, setup, setup.model, setup.calib, "--recipe", recipe, "-o", setup.output)
    assert result.code == 0, result.err  # a replay beside another output is fine
    for path in setup.out_dir.iterdir():
        path.unlink()
    # --report onto the recipe, and -o whose own recipe would be that file.
    result = cli(setup.model, "--calib", setup.calib, "--recipe", recipe, "-o", setup.output,
                 "--report", recipe)  # fmt: skip
    assert_clean_failure(result, EXIT_USAGE, "--report", "--recipe file", out_dir=setup.out_dir)
    result = cli(setup.model, "--calib", setup.calib, "--recipe", recipe, "-o", first)
    assert result.code == EXIT_USAGE and "recipe" in result.err, result.err
    assert recipe.read_bytes() == before


@pytest.mark.parametrize("suffix", [".json", ".textproto", ".onnxtxt", ".prototxt"])
def test_output_with_a_text_format_suffix_is_refused_up_front(
    cli: CliRunner, setup: Setup, suffix: str
) -> None:
    # onnx.save would write JSON / text for these names; the run used to fail only at the end.
    result = run(cli, setup, setup.model, setup.calib, "--sparsity", 0.5,
                 "-o", setup.out_dir / f"pruned{suffix}")  # fmt: skip
    assert_clean_failure(result, EXIT_USAGE, "output path", suffix, ".onnx", out_dir=setup.out_dir)


def test_output_with_another_suffix_is_binary_protobuf(cli: CliRunner, setup: Setup) -> None:
    target = setup.out_dir / "pruned.model"
    result = run(cli, setup, setup.model, setup.calib, "--sparsity", 0.5, "-o", target)
    assert result.code == 0, result.err
    onnx.checker.check_model(onnx.load_model(str(target), format="protobuf"), full_check=True)
