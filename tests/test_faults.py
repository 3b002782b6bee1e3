"""Faults while running: rejected shapes, unwritable output, disk full, Ctrl-C; determinism.

Each fault is injected with monkeypatch (the tests run as root, where chmod does not stop
writes) and must end in a documented exit code, exactly one ``onnxprune:`` line on stderr, no
output file and no leftover ``.onnxprune-*`` / ``onnxprune-*`` temporary directories.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import builders
import numpy as np
import onnx
import pytest
from conftest import CliResult, CliRunner
from onnx import helper

import onnxprune.calibrate.runner
import onnxprune.verify
from onnxprune.cli import main
from onnxprune.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_WRITE_FAILED


@dataclass(frozen=True)
class Setup:
    model: Path
    calib: Path
    out_dir: Path
    system_tmp: Path  # tempfile's directory for the run: onnxprune's own temp dirs go here

    @property
    def output(self) -> Path:
        return self.out_dir / "pruned.onnx"

    def args(self, *extra: object) -> list[str]:
        return [
            str(a)
            for a in (
                self.model, "--calib", self.calib, "--sparsity", 0.5, "-o", self.output,
                "--report", self.out_dir / "report.json", *extra,
            )
        ]  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    inputs, out_dir, system_tmp = tmp_path / "in", tmp_path / "out", tmp_path / "tmp"
    for folder in (inputs, out_dir, system_tmp):
        folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    model = builders.mlp_gemm()
    return Setup(
        model=builders.save(model, inputs / "mlp.onnx"),
        calib=builders.write_npz(inputs / "calib.npz", builders.random_inputs(model, 64, seed=1)),
        out_dir=out_dir,
        system_tmp=system_tmp,
    )


def assert_clean(result: CliResult, code: int, s: Setup, *words: str) -> str:
    """Exit ``code``, one stderr line naming ``words``, nothing left in out_dir or temp."""
    assert result.code == code, result.err
    assert result.err.count("\n") == 1 and result.err.endswith("\n"), repr(result.err)
    assert result.err.startswith("onnxprune: "), result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word.lower() in result.err.lower(), (word, result.err)
    assert sorted(p.name for p in s.out_dir.iterdir()) == []
    assert sorted(p.name for p in s.system_tmp.iterdir()) == []
    return result.err


def in_out_dir(s: Setup, path: object) -> bool:
    """True for the output directory itself and anything below it (the staging dir)."""
    return Path(str(path)).resolve().is_relative_to(s.out_dir.resolve())


# ---------------------------------------------------------------------------------------------
# Shapes the model rejects at run time


def test_shape_rejected_at_run_time_is_one_line_naming_the_input(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # x[batch, n] with n dynamic: the data check cannot know that only n = 16 fits W[16, 8].
    model = builders.finish(
        "dynamic_k",
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")],
        [builders.value_info("x", ["batch", "n"])],
        [builders.value_info("y", ["batch", 8])],
        {"W": np.ones((16, 8), dtype=np.float32)},
        producer="",
    )
    path = builders.save(model, tmp_path / "dynamic.onnx")
    calib = builders.write_npz(tmp_path / "calib.npz", {"x": np.ones((20, 12), dtype=np.float32)})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit) as done:
        main([str(path), "--calib", str(calib), "--sparsity", "0.5", "-o", str(out / "p.onnx")])
    captured = capfd.readouterr()  # file-descriptor level: onnxruntime's own C++ log included
    assert done.value.code == EXIT_BAD_INPUT
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err  # nothing from onnxruntime's logger
    line = captured.err
    assert line.startswith("onnxprune: error: onnxruntime rejected a batch from ")
    assert "calib.npz" in line and "input x float32[" in line and ", 12]" in line
    assert "onnxruntime_src" not in line and "[ONNXRuntimeError]" not in line
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# The output cannot be written


def test_output_directory_not_writable(
    cli: CliRunner, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_access = os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK and in_out_dir(setup, path):
            return False  # what a non-root user gets from a chmod 555 directory
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    result = cli(*setup.args())
    assert_clean(result, EXIT_WRITE_FAILED, setup, "not writable", str(setup.out_dir))


def test_permission_denied_when_publishing_leaves_no_side_files(
    cli: CliRunner, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The directory looked writable but the final rename is refused (ACLs, a race): the report
    # and the recipe, moved just before the model, must not stay behind without it.
    real_replace = os.replace

    def replace(source: Any, destination: Any, *args: Any, **kwargs: Any) -> None:
        if Path(str(destination)) == setup.output:
            raise PermissionError(errno.EACCES, "Permission denied", str(destination))
        real_replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    result = cli(*setup.args())
    assert_clean(result, EXIT_WRITE_FAILED, setup, "permission denied", "pruned.onnx")


def test_disk_full_while_saving_the_model(
    cli: CliRunner, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = onnx.save_model
    attempts: list[Path] = []

    def save_model(model: onnx.ModelProto, path: Any, *args: Any, **kwargs: Any) -> None:
        if in_out_dir(setup, path):
            attempts.append(Path(str(path)))
            Path(str(path)).write_bytes(model.SerializeToString()[:100])  # a partial file
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(model, path, *args, **kwargs)

    monkeypatch.setattr(onnx, "save_model", save_model)
    result = cli(*setup.args())
    assert_clean(result, EXIT_WRITE_FAILED, setup, "no space left on device")
    assert attempts and all(p.parent.name.startswith(".onnxprune-") for p in attempts)


def test_disk_full_while_writing_the_recipe(
    cli: CliRunner, setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_text = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if in_out_dir(setup, self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    result = cli(*setup.args())
    assert_clean(result, EXIT_WRITE_FAILED, setup, "no space left on device")


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def _interrupt(*args: Any, **kwargs: Any) -> Any:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (onnxprune.calibrate.runner, "fold_batch"),  # during calibration
        (onnxprune.verify.ReferenceRun, "compare"),  # after the model is staged, verifying
    ],
)
def test_ctrl_c_leaves_nothing_behind(
    cli: CliRunner, setup: Setup, monkeypatch: pytest.MonkeyPatch, module: Any, name: str
) -> None:
    calls: list[str] = []

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        _interrupt()

    monkeypatch.setattr(module, name, interrupt)
    result = cli(*setup.args())
    assert calls == [name]
    assert_clean(result, EXIT_INTERRUPTED, setup, "interrupted", "no output written")


# ---------------------------------------------------------------------------------------------
# Determinism


def _normalised_report(path: Path, out_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    assert report.pop("timings")  # the only part allowed to vary between runs
    text = json.dumps(report, sort_keys=True).replace(str(out_dir), "<out>")
    result: dict[str, Any] = json.loads(text)
    return result


@pytest.mark.parametrize(
    ("builder", "options"),
    [
        (builders.cnn_bn, []),  # contrib, group auto: four candidates judged on data
        (builders.transformer_block, ["--method", "wanda", "--sweep", "0.3,0.6"]),
    ],
)
def test_same_inputs_give_byte_identical_model_and_report(
    cli: CliRunner, tmp_path: Path, builder: Callable[[], onnx.ModelProto], options: list[str]
) -> None:
    model = builder()
    path, calib = builders.save_with_calibration(model, tmp_path, 160)
    runs = []
    for k in range(2):
        out_dir = tmp_path / f"run{k}"
        out_dir.mkdir()
        result = cli(
            path, "--calib", calib, "--sparsity", 0.6, "--seed", 3, "-o", out_dir / "p.onnx",
            "--report", out_dir / "r.json", "-q", *options,
        )  # fmt: skip
        assert result.code == 0, result.err
        runs.append(
            (
                (out_dir / "p.onnx").read_bytes(),
                _normalised_report(out_dir / "r.json", out_dir),
                (out_dir / "p.onnx.recipe.json").read_bytes(),
            )
        )
    (model_a, report_a, recipe_a), (model_b, report_b, recipe_b) = runs
    assert model_a == model_b
    assert report_a == report_b
    assert recipe_a == recipe_b
    assert report_a["achieved_sparsity"] > 0.3 and report_a["fidelity"]["samples"] > 0
