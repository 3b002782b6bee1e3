"""Trust, round 2 (issue 12): inputs never overwritten, clean deaths on signals, no lies.

Each test is one case of the catalogue in README ("Bad input and faults"): it failed on the
code before the fix and passes now.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import builders
import numpy as np
import onnx
import pytest
from conftest import EXAMPLE_CALIB, EXAMPLE_CNN, REPO, CliResult, CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper
from ort_run import first_output

from onnxprune.calibrate.runner import _session
from onnxprune.checks import Gates
from onnxprune.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_USAGE, Terminated, UsageError
from onnxprune.io import deferred_signals, publish
from onnxprune.options import CONFIG, options_for
from onnxprune.recipe import load_recipe
from onnxprune.verify import Fidelity, _OutputAccumulator

SAMPLES = 64


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_one_line_error(result: CliResult, code: int, *words: str) -> str:
    assert result.code == code, result.err
    assert result.err.count("\n") == 1 and result.err.endswith("\n"), repr(result.err)
    assert result.err.startswith("onnxprune: error: "), result.err
    assert "Traceback" not in result.err + result.out
    for word in words:
        assert word.lower() in result.err.lower(), (word, result.err)
    return result.err


@pytest.fixture
def mlp(tmp_path: Path) -> tuple[Path, Path]:
    """(model, calibration .npz) for mlp_gemm (x float32[batch,16]) in tmp_path/in."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    model = builders.mlp_gemm()
    return (
        builders.save(model, inputs / "mlp.onnx"),
        builders.write_npz(inputs / "calib.npz", builders.random_inputs(model, SAMPLES, seed=1)),
    )


# ---------------------------------------------------------------------------------------------
# 4. Headers that lie about their size are refused before anything is allocated


def _lying_npy(x: np.ndarray, rows: int) -> bytes:
    """An .npy whose header claims ``rows`` rows but whose data holds ``x`` only."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(x.dtype), "fortran_order": False}
    np.lib.format.write_array_header_1_0(buffer, {**header, "shape": (rows, *x.shape[1:])})
    buffer.write(x.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["npz", "npy", "npy-dir"])
def test_header_claiming_a_billion_rows_is_refused_at_once(
    cli: CliRunner, tmp_path: Path, mlp: tuple[Path, Path], kind: str
) -> None:
    model, _ = mlp
    x = builders.random_inputs(builders.mlp_gemm(), 8, seed=0)["x"]
    data = _lying_npy(x, 10**9)
    if kind == "npz":
        calib = tmp_path / "liar.npz"
        with zipfile.ZipFile(calib, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("x.npy", data)
    elif kind == "npy":
        calib = tmp_path / "liar.npy"
        calib.write_bytes(data)
    else:
        calib = tmp_path / "liar"
        calib.mkdir()
        (calib / "x.npy").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    result = cli(model, "--calib", calib, "--sparsity", 0.5, "-o", out / "p.onnx", "-q")
    assert_one_line_error(result, EXIT_BAD_INPUT, "header", "1000000000", "bytes")
    assert _files(out) == []


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_whose_directory_claims_an_impossible_expansion_is_refused(
    cli: CliRunner, tmp_path: Path, mlp: tuple[Path, Path], compression: int
) -> None:
    model, calib = mlp
    # Rewrite the member's uncompressed size (central directory and local header) to 1 TB.
    with zipfile.ZipFile(calib) as archive:
        info = archive.getinfo("x.npy")
        payload = archive.read(info)
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w", compression) as archive:
        archive.writestr("x.npy", payload)
    raw = bytearray(liar.read_bytes())
    real = len(payload).to_bytes(4, "little")
    assert raw.count(real) >= 2
    liar.write_bytes(bytes(raw).replace(real, (2**32 - 1).to_bytes(4, "little")))
    result = cli(model, "--calib", liar, "--sparsity", 0.5, "-o", tmp_path / "p.onnx", "-q")
    assert_one_line_error(result, EXIT_BAD_INPUT, "liar.npz")
    assert not (tmp_path / "p.onnx").exists()


# ---------------------------------------------------------------------------------------------
# 6. A non-positive dim_value (Paddle's -1 batch) is a dynamic dimension


@pytest.mark.parametrize(
    ("builder", "options"),
    [
        (builders.mlp_gemm, ()),
        (builders.cnn_bn, ()),
        (builders.cnn_bn, ("--structured", 0.3, "--sequential")),
        (builders.transformer_block, ()),
    ],
)
def test_minus_one_dimensions_are_dynamic(
    cli: CliRunner, tmp_path: Path, builder: object, options: tuple[object, ...]
) -> None:
    model = builder()  # type: ignore[operator]
    data = builders.random_inputs(model, SAMPLES, seed=0)
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.Clear()
                dim.dim_value = -1
    path = builders.save(model, tmp_path / "paddle.onnx")
    calib = builders.write_npz(tmp_path / "calib.npz", data)
    out = tmp_path / "pruned.onnx"
    result = cli(path, "--calib", calib, "--sparsity", 0.5, "-o", out, "--json", *options)
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["calibration_samples"] > 0
    assert report["achieved_sparsity"] > 0.3  # the CNN's tiny stem keeps its row floor
    onnx.checker.check_model(str(out), full_check=True)


# ---------------------------------------------------------------------------------------------
# 5. Recipes are checked like the command line: types, ranges, unknown keys


@pytest.fixture
def recipe(cli: CliRunner, tmp_path: Path, mlp: tuple[Path, Path]) -> dict[str, Any]:
    """A real recipe, written by a run on mlp_gemm."""
    model, calib = mlp
    out = tmp_path / "first.onnx"
    result = cli(model, "--calib", calib, "--sparsity", 0.5, "-o", out, "-q")
    assert result.code == 0, result.err
    data: dict[str, Any] = json.loads(Path(str(out) + ".recipe.json").read_text())
    return data


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("update", "false", ("--update", "true or false")),
        ("sequential", "no", ("--sequential", "true or false")),
        ("exclude", "fc1", ("--exclude", "list of strings")),
        ("layer_overrides", [1], ("--layer-overrides", "list of strings")),
        ("seed", "abc", ("--seed", "integer")),
        ("seed", -1, ("--seed", ">= 0")),
        ("batch_size", 3.5, ("--batch-size", "integer")),
        ("num_samples", 2.5, ("--num-samples", "integer")),
        ("sparsity", True, ("--sparsity", "number")),
        ("sparsity", 1.5, ("--sparsity", "[0, 1)")),
        ("min_row_weights", -3, ("--min-row-weights",)),
        ("colour", "blue", ("unknown key", "colour")),
        ("layers", [], ("layers",)),
    ],
)
def test_recipe_settings_are_type_checked(
    cli: CliRunner,
    tmp_path: Path,
    mlp: tuple[Path, Path],
    recipe: dict[str, Any],
    key: str,
    value: object,
    words: tuple[str, ...],
) -> None:
    model, calib = mlp
    path = tmp_path / "edited.recipe.json"
    path.write_text(json.dumps({**recipe, key: value}))
    out = tmp_path / "out"
    out.mkdir()
    result = cli(model, "--calib", calib, "--recipe", path, "-o", out / "p.onnx", "-q")
    assert_one_line_error(result, EXIT_USAGE, "recipe", *words)
    assert _files(out) == []


def test_negative_seed_is_a_usage_error(
    cli: CliRunner, tmp_path: Path, mlp: tuple[Path, Path]
) -> None:
    model, calib = mlp
    result = cli(
        model, "--calib", calib, "--sparsity", 0.5, "--seed", -1, "-o", tmp_path / "p.onnx"
    )
    assert_one_line_error(result, EXIT_USAGE, "--seed")
    assert not (tmp_path / "p.onnx").exists()


_RECIPE_FIELDS = [option.name for option in options_for(CONFIG)]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.dictionaries(
        st.sampled_from([*_RECIPE_FIELDS, "layers", "versions", "junk"]),
        _JSON,
        min_size=1,
        max_size=3,
    )
)
def test_recipe_fuzz_is_loaded_or_refused_in_one_line(
    tmp_path: Path, recipe: dict[str, Any], edits: dict[str, object]
) -> None:
    path = tmp_path / "fuzz.recipe.json"
    path.write_text(json.dumps({**recipe, **edits}))
    try:
        config, _ = load_recipe(path)
    except UsageError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    # Loaded: every field has the type the command line would give it.
    for option in options_for(CONFIG):
        value = getattr(config, option.name)
        assert option.problem(value) is None, (option.name, value)
    assert 0.0 <= config.sparsity < 1.0 and config.seed >= 0 and config.batch_size >= 1


# ---------------------------------------------------------------------------------------------
# 3. Non-finite values: refused in the weights, failing every gate in the outputs


def _with_value(model: onnx.ModelProto, name: str, index: tuple[int, ...], value: float) -> None:
    init = next(t for t in model.graph.initializer if t.name == name)
    array = numpy_helper.to_array(init).copy()
    array[index] = value
    init.CopyFrom(numpy_helper.from_array(array, name))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weight_is_refused_up_front(
    cli: CliRunner, tmp_path: Path, value: float
) -> None:
    model = builders.mlp_gemm()
    calib = builders.write_npz(tmp_path / "c.npz", builders.random_inputs(model, SAMPLES, seed=1))
    _with_value(model, "W1", (3, 5), value)
    path = builders.save(model, tmp_path / "nan.onnx")
    out = tmp_path / "out"
    out.mkdir()
    result = cli(path, "--calib", calib, "--sparsity", 0.5, "-o", out / "p.onnx")
    assert_one_line_error(result, EXIT_BAD_INPUT, "W1", "NaN/inf")
    assert _files(out) == []


def test_nan_in_the_outputs_fails_every_gate(cli: CliRunner, tmp_path: Path) -> None:
    # A NaN bias (not a pruned weight) makes output column 0 NaN: before, --max-abs-error
    # kept max(0, nan) = 0 and top-1 agreed on NaN rows, so the run passed.
    model = builders.mlp_gemm()
    calib = builders.write_npz(tmp_path / "c.npz", builders.random_inputs(model, SAMPLES, seed=1))
    _with_value(model, "b2", (0,), np.nan)
    path = builders.save(model, tmp_path / "nan.onnx")
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    gates = ("--max-abs-error", 1e6, "--min-top1", 0.0)
    result = cli(
        path, "--calib", calib, "--sparsity", 0.5, "-o", out, "--report", report, "-q", *gates
    )
    assert result.code == EXIT_GATE_FAILED, result.err
    assert "NaN/inf" in result.err and not out.exists()
    data = json.loads(report.read_text())
    (y,) = data["fidelity"]["outputs"]
    assert y["nonfinite"] > 0 and y["max_abs_error"] == float("inf")
    assert {f["option"] for f in data["gate_failures"]} == {"--max-abs-error", "--min-top1"}
    # Without a gate the run passes, but says so on stderr.
    result = cli(path, "--calib", calib, "--sparsity", 0.5, "-o", out, "-q")
    assert result.code == 0 and "NaN/inf" in result.err


def test_accumulator_counts_nan_and_inf_as_infinite_error() -> None:
    acc = _OutputAccumulator()
    reference = np.ones((4, 3), dtype=np.float32)
    candidate = reference.copy()
    candidate[1, 2], candidate[3, 0] = np.nan, np.inf
    acc.add(reference, candidate, 4)
    result = acc.result("y")
    assert result.nonfinite == 2 and result.max_abs_error == np.inf
    failures = Gates(min_cosine=0.0, min_top1=0.0, max_abs_error=1e9).check(
        Fidelity("test", 4, [result])
    )
    assert sorted(f.option for f in failures) == ["--max-abs-error", "--min-cosine", "--min-top1"]


# ---------------------------------------------------------------------------------------------
# 7. Integer outputs are scored by exact agreement, never cosine


def test_integer_output_is_scored_by_exact_agreement(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.mlp_gemm()
    model.graph.node.append(onnx.helper.make_node("ArgMax", ["y"], ["cls"], axis=1, keepdims=0))
    model.graph.output.append(
        onnx.helper.make_tensor_value_info("cls", onnx.TensorProto.INT64, ["batch"])
    )
    onnx.checker.check_model(model, full_check=True)
    path = builders.save(model, tmp_path / "argmax.onnx")
    x = builders.random_inputs(model, 256, seed=1)["x"]
    calib = builders.write_npz(tmp_path / "c.npz", {"x": x[:200]})
    held = builders.write_npz(tmp_path / "e.npz", {"x": x[200:]})
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    result = cli(
        path, "--calib", calib, "--eval", held, "--sparsity", 0.6, "-o", out,
        "--report", report, "-q", "--min-cosine", 0.5, "--keep-on-fail",
    )  # fmt: skip
    data = json.loads(report.read_text())
    outputs = {o["name"]: o for o in data["fidelity"]["outputs"]}
    # Differential: the agreement is the share of equal class indices in onnxruntime.
    original = first_output(path, {"x": x[200:]}, "cls")
    pruned = first_output(out, {"x": x[200:]}, "cls")
    agreement = float(np.mean(original == pruned))
    assert agreement < 1.0  # class indices differ somewhere: cosine would have failed the gate
    assert outputs["cls"]["exact"] and outputs["cls"]["top1_agreement"] == pytest.approx(agreement)
    assert not outputs["y"]["exact"] and outputs["y"]["cosine"] >= 0.5
    assert result.code == 0, result.err  # --min-cosine does not apply to class indices
    assert all(f["output"] != "cls" for f in data["gate_failures"])
    # --min-top1 gates the agreement.
    second = tmp_path / "r2.json"
    result = cli(
        path, "--calib", calib, "--eval", held, "--sparsity", 0.6, "-o", tmp_path / "q.onnx",
        "-q", "--min-top1", min(1.0, agreement + 0.01), "--report", second,
    )  # fmt: skip
    assert result.code == EXIT_GATE_FAILED
    failures = json.loads(second.read_text())["gate_failures"]
    assert {"output": "cls", "metric": "exact agreement", "option": "--min-top1"}.items() <= next(
        f for f in failures if f["output"] == "cls"
    ).items()


# ---------------------------------------------------------------------------------------------
# 9. Warnings go to stderr through logging, whatever -q says


@pytest.mark.parametrize("mode", [(), ("-q",), ("--json",)])
def test_unreachable_sparsity_warns_on_stderr_even_with_quiet(
    cli: CliRunner, tmp_path: Path, mlp: tuple[Path, Path], mode: tuple[str, ...]
) -> None:
    model, calib = mlp
    result = cli(
        model, "--calib", calib, "--sparsity", 0.5, "--min-row-weights", 100000,
        "-o", tmp_path / "p.onnx", *mode,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert result.err.startswith("onnxprune: warning: achieved sparsity 0.0000 is below")
    assert "warning" not in result.out.replace('"warnings"', "")
    if mode == ("-q",):
        assert result.out == ""


def test_an_unreachable_search_level_is_not_called_a_request(
    cli: CliRunner, tmp_path: Path, mlp: tuple[Path, Path]
) -> None:
    """With --sparsity auto the level a warning compares against is the one the search chose:
    the user asked for none."""
    model, calib = mlp
    result = cli(
        model, "--calib", calib, "--sparsity", "auto", "--min-cosine", 0.0,
        "--min-row-weights", 100000, "-o", tmp_path / "p.onnx", "-q",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "is below the search's level" in result.err
    assert "requested" not in result.err


# ---------------------------------------------------------------------------------------------
# 1. Property: no output path drawn from the files the run reads (or their aliases) is written


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Everything one run reads, plus a symbolic and a hard link to each file elsewhere."""
    root = tmp_path_factory.mktemp("world")
    inputs, aliases = root / "in", root / "aliases"
    inputs.mkdir()
    aliases.mkdir()
    model = builders.mlp_gemm()
    x = builders.random_inputs(model, SAMPLES, seed=1)["x"]
    onnx.save_model(
        model, str(inputs / "m.onnx"), save_as_external_data=True,
        all_tensors_to_one_file=True, location="m.weights", size_threshold=0,
    )  # fmt: skip
    (inputs / "calib").mkdir()
    builders.write_npz(inputs / "calib" / "a.npz", {"x": x[:32]})
    (inputs / "calib" / "deeper").mkdir()
    builders.write_npz(inputs / "calib" / "deeper" / "b.npz", {"x": x[32:]})
    builders.write_npz(inputs / "eval.npz", {"x": x[:8]})
    recipe = {"recipe_version": 1, "sparsity": 0.5}
    (inputs / "r.recipe.json").write_text(json.dumps(recipe))
    files = {str(p.relative_to(inputs)): p for p in inputs.rglob("*") if p.is_file()}
    paths = dict(files)
    for name, path in files.items():
        flat = name.replace("/", "_")
        (aliases / f"sym_{flat}").symlink_to(path)
        (aliases / f"hard_{flat}").hardlink_to(path)
        paths[f"sym {name}"] = aliases / f"sym_{flat}"
        paths[f"hard {name}"] = aliases / f"hard_{flat}"
        paths[f"dotted {name}"] = path.parent / "." / ".." / path.parent.name / path.name
    return paths


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_output_path_hits_a_file_the_run_reads(
    cli: CliRunner, world: dict[str, Path], tmp_path: Path, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(world)), label="target")
    option = data.draw(st.sampled_from(["-o", "--report"]), label="option")
    inputs = world["m.onnx"].parent
    before = {p: p.read_bytes() for p in inputs.rglob("*") if p.is_file()}
    output = ["-o", tmp_path / "fine.onnx"] if option == "--report" else []
    result = cli(
        inputs / "m.onnx", "--calib", inputs / "calib", "--eval", inputs / "eval.npz",
        "--recipe", inputs / "r.recipe.json", option, world[name], *output, "-q",
    )  # fmt: skip
    assert_one_line_error(result, EXIT_USAGE, option if option != "-o" else "output")
    assert {p: p.read_bytes() for p in inputs.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "fine.onnx").exists()


# ---------------------------------------------------------------------------------------------
# 2. SIGTERM / SIGHUP: cleanup runs, exit 128 + signal, one line


@pytest.mark.parametrize(
    ("signum", "phase"),
    [
        # The run's onnxprune-run-* work directory in $TMPDIR (sessions are built in
        # memory: calibration writes nothing).
        (signal.SIGTERM, "running"),
        (signal.SIGHUP, "running"),
        (signal.SIGTERM, "staging"),  # the staged model beside the output, being verified
    ],
)
def test_signal_mid_run_cleans_up_and_exits_128_plus_signal(
    tmp_path: Path, signum: int, phase: str
) -> None:
    system_tmp, out = tmp_path / "tmp", tmp_path / "out"
    system_tmp.mkdir()
    out.mkdir()
    # A long verification (40 x the digits test set) keeps the staging directory open.
    test = np.load(REPO / "calibration_data" / "digits_test.npz")
    held = builders.write_npz(
        tmp_path / "eval.npz", {"input": np.tile(test["input"], (40, 1, 1, 1))}
    )
    command = [
        sys.executable, "-m", "onnxprune.cli", EXAMPLE_CNN,
        "--calib", EXAMPLE_CALIB, "--eval", held, "--sparsity", 0.8,
        "--no-update", "--allocation", "group", "-o", out / "p.onnx", "-q",
    ]  # fmt: skip
    watched, prefix = (system_tmp, "onnxprune-run-") if phase == "running" else (out, ".onnxprune-")
    env = {**os.environ, "TMPDIR": str(system_tmp)}
    process = subprocess.Popen(
        [str(c) for c in command], env=env, cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    # (The CLI keeps its temporary directories in one onnxprune-run-* directory of its own.)
    while not any(p.name.startswith(prefix) for p in watched.rglob("*onnxprune-*")):
        assert process.poll() is None, f"finished before the {phase} phase was seen"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    assert stderr == f"onnxprune: terminated by {name}, no output written\n"
    assert stdout == ""
    # (onnxruntime's import leaves its own .ses file in $TMPDIR.)
    assert [f for f in _files(system_tmp) if "onnxprune" in f] == [] and _files(out) == []


def test_a_signal_another_thread_receives_is_held_until_the_block_ends() -> None:
    # onnxruntime's worker threads exist before a staging directory is made: the kernel may
    # hand a SIGTERM to one of them, and CPython then runs the handler in the main thread.
    events: list[str] = []
    release = threading.Event()
    worker = threading.Thread(target=release.wait, args=(10,))
    worker.start()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: events.append("handled"))
    try:
        with deferred_signals():
            assert worker.ident is not None
            signal.pthread_kill(worker.ident, signal.SIGTERM)
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:  # bytecode boundaries where handlers run
                time.sleep(0.001)
            events.append("block ended")
        events.append("after")
    finally:
        release.set()
        worker.join()
        signal.signal(signal.SIGTERM, previous)
    assert events == ["block ended", "handled", "after"]


# ---------------------------------------------------------------------------------------------
# 10. Loose ends: a recipe when nothing is pruned, check-pattern with nothing to check,
# symbolic links to models with external data, no open mkstemp handles


def test_recipe_is_written_when_nothing_is_pruned(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.no_prunable()
    path, calib = builders.save_with_calibration(
        model, tmp_path, SAMPLES, name="plain.onnx", calib="c.npz"
    )
    out = tmp_path / "copy.onnx"
    result = cli(path, "--calib", calib, "--sparsity", 0.5, "-o", out, "--json")
    assert result.code == 0, result.err
    recipe = Path(str(out) + ".recipe.json")
    assert json.loads(result.out)["recipe"] == str(recipe)
    config, data = load_recipe(recipe)
    assert config.sparsity == 0.5 and data["layers"] == {}
    # The replay copies the model again.
    again = tmp_path / "again.onnx"
    result = cli(path, "--calib", calib, "--recipe", recipe, "-o", again, "-q")
    assert result.code == 0, result.err
    assert again.read_bytes() == out.read_bytes() == path.read_bytes()


def test_check_pattern_with_no_applicable_layer_says_so(cli: CliRunner, tmp_path: Path) -> None:
    # A depthwise-only conv has one input channel per filter: 2:4 applies to none of it.
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    model = builders.finish(
        "dw",
        [onnx.helper.make_node("Conv", ["x", "w"], ["y"], group=4, name="dw")],
        [builders.value_info("x", ["batch", 4, 8, 8])],
        [builders.value_info("y", ["batch", 4, 6, 6])],
        {"w": weight},
        producer="",
    )
    path = builders.save(model, tmp_path / "dw.onnx")
    for target in (path, builders.save(builders.no_prunable(), tmp_path / "none.onnx")):
        result = cli("check-pattern", target)
        assert result.code == 0, result.out
        assert "NOT every layer conforms" not in result.out
        assert "nothing to check" in result.out.splitlines()[-1]
        data = json.loads(cli("check-pattern", target, "--json").out)
        assert data["applicable_layers"] == 0 and "nothing to check" in data["verdict"]


def test_symlinked_model_finds_its_external_data_beside_the_real_file(
    cli: CliRunner, tmp_path: Path
) -> None:
    real, elsewhere = tmp_path / "real", tmp_path / "elsewhere"
    real.mkdir()
    elsewhere.mkdir()
    model = builders.mlp_gemm()
    onnx.save_model(
        model, str(real / "m.onnx"), save_as_external_data=True,
        all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0,
    )  # fmt: skip
    link = elsewhere / "link.onnx"
    link.symlink_to(real / "m.onnx")
    calib = builders.write_npz(tmp_path / "c.npz", builders.random_inputs(model, SAMPLES, seed=1))
    out = tmp_path / "p.onnx"
    result = cli(link, "--calib", calib, "--sparsity", 0.5, "-o", out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["achieved_sparsity"] > 0.4 and report["output_written"]
    assert (tmp_path / "p.onnx.data").exists()  # external data kept
    onnx.checker.check_model(str(out), full_check=True)


def _open_files() -> set[str]:
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            names.add(os.readlink(f"/proc/self/fd/{fd}"))
    return names


def test_session_files_in_a_work_directory_leave_no_open_handle(tmp_path: Path) -> None:
    """Big-model mode writes a session's model into its work directory and removes it; no
    handle on it stays open. Otherwise nothing is written at all."""
    model = builders.mlp_matmul()
    with _session(model, tmp_path, "augmented") as session:
        (written,) = tmp_path.iterdir()
        assert str(written) not in _open_files()
        assert session.get_inputs()
    assert not written.exists()
    with _session(model, None, "augmented") as session:
        assert session.get_inputs()
    assert list(tmp_path.iterdir()) == []


def test_signal_between_two_moves_of_publish_removes_what_was_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, out = tmp_path / "staging", tmp_path / "out"
    staging.mkdir()
    out.mkdir()
    (staging / "m.onnx").write_bytes(b"model")
    (staging / "report").write_text("{}")
    (staging / "recipe").write_text("{}")
    real_move = shutil.move
    calls: list[object] = []

    def move_then_stop(source: Any, destination: Any) -> Any:
        calls.append(source)
        if len(calls) == 2:
            raise Terminated(signal.SIGTERM)
        return real_move(source, destination)

    monkeypatch.setattr(shutil, "move", move_then_stop)
    extras = {staging / "report": out / "r.json", staging / "recipe": out / "m.recipe.json"}
    with pytest.raises(Terminated):
        publish(staging / "m.onnx", out / "m.onnx", extras)
    assert _files(out) == []


def test_a_tiny_calibration_set_is_warned_about(cli: CliRunner, tmp_path: Path) -> None:
    """Fewer than 10 calibration samples: a warning says the statistics are unreliable and,
    without --eval, that the fidelity check reuses those samples (a set of fewer than 10
    holds none out); 10 or more: no warning."""
    model = builders.mlp_gemm()
    path = builders.save(model, tmp_path / "mlp.onnx")
    few = builders.write_npz(tmp_path / "few.npz", builders.random_inputs(model, 5, seed=1))
    enough = builders.write_npz(tmp_path / "ten.npz", builders.random_inputs(model, 10, seed=1))
    result = cli(path, "--calib", few, "--sparsity", 0.5, "-o", tmp_path / "a.onnx", "-q")
    assert result.code == 0, result.err
    assert "only 5 calibration sample(s)" in result.err and "reuses them" in result.err
    result = cli(
        path, "--calib", few, "--eval", enough, "--sparsity", 0.5, "-o", tmp_path / "b.onnx", "-q"
    )
    assert result.code == 0, result.err
    assert "only 5 calibration sample(s)" in result.err and "reuses" not in result.err
    twelve = builders.write_npz(tmp_path / "12.npz", builders.random_inputs(model, 12, seed=1))
    result = cli(path, "--calib", twelve, "--sparsity", 0.5, "-o", tmp_path / "c.onnx", "-q")
    assert result.code == 0 and "calibration sample" not in result.err  # 11 (1 held out)
