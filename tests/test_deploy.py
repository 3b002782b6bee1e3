"""The deployable artifact (``--quantize int8``, ``--storage sparse``): differential checks.

The quantized file runs in onnxruntime and keeps every pruned zero; the fidelity check and the
gates judge the file that is written (not the fp32 pruned model); sparse storage gives exactly
the dense-stored outputs; impossible combinations are refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import builders
import numpy as np
import onnx
import pytest
from conftest import CliRunner, assert_refused
from onnx import numpy_helper
from ort_run import run_model

from onnxprune.calibrate.sources import model_input_specs, open_data
from onnxprune.deploy import _StreamingReader, sparse_storage

FAST = ("--no-update", "--allocation", "group")


def _prepare(tmp_path: Path, model: onnx.ModelProto, samples: int = 96) -> tuple[Path, Path]:
    path, calib = builders.save_with_calibration(model, tmp_path, samples)
    return path, calib


def _run(
    cli: CliRunner, model: Path, calib: Path, out: Path, *args: object
) -> tuple[int, dict[str, Any], str]:
    report = out.with_name(out.stem + ".report.json")
    result = cli(model, "--calib", calib, "-o", out, "--report", report, "-q", *args)
    data = json.loads(report.read_text()) if report.exists() else {}
    return result.code, data, result.err


@pytest.mark.parametrize(
    ("builder", "weights"),
    [
        (builders.mlp_gemm, {"W0", "W1", "W2"}),
        (builders.mlp_matmul, {"W0", "W1", "W2"}),
        (builders.transformer_block, {"q_w", "k_w", "v_w", "o_w", "ffn1_w", "ffn2_w"}),
    ],
)
@pytest.mark.parametrize(
    "quantize",
    [("int8", "--quant-format", "qdq"), ("int8", "--quant-format", "qoperator"), ("int8-dynamic",)],
)
def test_quantized_artifact_runs_and_keeps_every_pruned_zero(
    cli: CliRunner, tmp_path: Path, builder: Any, weights: set[str], quantize: tuple[str, ...]
) -> None:
    model = builder()
    path, calib = _prepare(tmp_path, model)
    pruned, quantized = tmp_path / "pruned.onnx", tmp_path / "int8.onnx"
    code, _, err = _run(cli, path, calib, pruned, "--sparsity", "0.7", *FAST)
    assert code == 0, err
    code, report, err = _run(
        cli, path, calib, quantized, "--sparsity", "0.7", *FAST, "--quantize", *quantize
    )
    assert code == 0, err
    fp32 = builders.stored_weights(pruned)
    stored = builders.stored_weights(quantized)
    for name in weights:
        zeros = fp32[name] == 0
        assert zeros.mean() > 0.3, name  # the layer was pruned
        # int8-dynamic turns a Gemm into a MatMul of the transposed weight.
        prefix, weight = (
            (name, fp32[name])
            if f"{name}_quantized" in stored
            else (f"{name}_Transposed", fp32[name].T)
        )
        zeros = weight == 0
        q = stored[f"{prefix}_quantized"]
        assert q.dtype == np.int8
        scale = stored[f"{prefix}_scale"].astype(np.float64)
        point = stored[f"{prefix}_zero_point"].astype(np.float64)
        assert np.all(point == 0)  # symmetric
        assert np.all(q[zeros] == 0), f"{name}: a pruned zero was quantized to a non-zero"
        # Dequantized (along whichever axis the per-channel scales run: a square weight
        # leaves two candidates), a pruned weight is exactly 0.0 and a kept one is within half
        # a quantization step of its fp32 value.
        axes = [i for i, d in enumerate(q.shape) if d == scale.size] if scale.size > 1 else [0]
        close = []
        for axis in axes:
            shape = [1] * q.ndim
            shape[axis] = scale.size
            dequantized = (q - point.reshape(shape)) * scale.reshape(shape)
            assert np.all(dequantized[zeros] == 0.0)
            step = np.broadcast_to(scale.reshape(shape), q.shape)
            close.append(bool(np.all(np.abs(dequantized - weight) <= step * 0.5 + 1e-6)))
        assert any(close), name
    ops = {n.op_type for n in onnx.load(str(quantized)).graph.node}
    if "qdq" in quantize:
        assert "DequantizeLinear" in ops
    else:
        assert ops & {"QLinearMatMul", "MatMulInteger", "QGemm"}
    # It runs in onnxruntime and stays close to the original on fresh inputs.
    feed = builders.random_inputs(model, 16, seed=7)
    for a, b in zip(run_model(path, feed), run_model(quantized, feed), strict=True):
        cos = (a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))
        assert cos > 0.8
    stages = report["artifact_stages"]
    assert [s["name"] for s in stages] == ["pruned", f"pruned + {quantize[0]}"]
    assert stages[-1]["file_size"] == quantized.stat().st_size == report["file_size_after"]
    assert report["fidelity"] == stages[-1]["fidelity"]
    assert report["arguments"]["quantize"] == quantize[0]


def test_gates_judge_the_written_quantized_file(cli: CliRunner, tmp_path: Path) -> None:
    """A gate between the fp32 pruned model's cosine and the quantized one's fails the run."""
    model = builders.mlp_gemm(sizes=(16, 64, 64, 8))
    path, calib = _prepare(tmp_path, model)
    quantize = ("--quantize", "int8", "--per-tensor", "--quant-range", "full")
    args = ("--sparsity", "0.5", *FAST, *quantize)
    code, report, err = _run(cli, path, calib, tmp_path / "probe.onnx", *args)
    assert code == 0, err
    pruned, quantized = (s["fidelity"]["outputs"][0]["cosine"] for s in report["artifact_stages"])
    assert quantized < pruned  # int8 costs something on this model
    gate = (pruned + quantized) / 2
    out = tmp_path / "gated.onnx"
    code, failed, err = _run(cli, path, calib, out, *args, "--min-cosine", gate)
    assert code == 5
    assert "fidelity gate failed" in err
    assert not out.exists()
    assert failed["gate_failures"][0]["value"] == pytest.approx(quantized)
    # The same gate passes without --quantize: the fp32 pruned model is above it.
    code, _, err = _run(cli, path, calib, out, *args[: -len(quantize)], "--min-cosine", gate)
    assert code == 0, err


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_on_a_set_that_is_not_whole_batches(
    cli: CliRunner, tmp_path: Path, method: str
) -> None:
    """70 samples in batches of 32: onnxruntime's histogram calibrators need equal batches."""
    model = builders.mlp_matmul()
    path, calib = _prepare(tmp_path, model, samples=70)
    out = tmp_path / "out.onnx"
    code, report, err = _run(
        cli, path, calib, out, "--sparsity", "0.5", *FAST,
        "--quantize", "int8", "--quant-calibration", method,
    )  # fmt: skip
    assert code == 0, err
    assert report["fidelity"]["outputs"][0]["cosine"] > 0.8
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}


def test_sparsity_auto_searches_on_the_quantized_artifact(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.mlp_gemm(sizes=(16, 64, 64, 8))
    path, calib = _prepare(tmp_path, model)
    out = tmp_path / "auto.onnx"
    code, report, err = _run(
        cli, path, calib, out, "--sparsity", "auto", "--min-cosine", "0.95", "--quantize", "int8",
        "--keep-on-fail",
    )  # fmt: skip
    chosen = [p for p in report["curve"] if p["sparsity"] == report["target_sparsity"]]
    assert chosen and chosen[0]["passes"]
    # The search measures on half of the held-out samples, the report on the other half: the
    # reported fidelity may land just below the gate (exit 5, the file kept).
    reported = report["fidelity"]["outputs"][0]["cosine"]
    assert code == (0 if reported >= 0.95 else 5), err
    # What was searched and reported on is the written, quantized file.
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}
    stages = [stage["name"] for stage in report["artifact_stages"]]
    assert any("int8" in name for name in stages)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_sparse_storage_gives_the_dense_stored_outputs(
    cli: CliRunner, tmp_path: Path, quantize: str
) -> None:
    model = builders.cnn_bn() if quantize == "none" else builders.mlp_gemm(sizes=(16, 128, 128, 8))
    path, calib = _prepare(tmp_path, model)
    dense, sparse = tmp_path / "dense.onnx", tmp_path / "sparse.onnx"
    args = ("--sparsity", "0.95" if quantize == "int8" else "0.85", "--quantize", quantize, *FAST)
    code, _, err = _run(cli, path, calib, dense, *args)
    assert code == 0, err
    code, report, err = _run(cli, path, calib, sparse, *args, "--storage", "sparse")
    assert code == 0, err
    stored = onnx.load(str(sparse))
    assert len(stored.graph.sparse_initializer) > 0
    assert sparse.stat().st_size < dense.stat().st_size
    assert report["artifact_stages"][-1]["name"].endswith("sparse storage")
    assert report["artifact_stages"][-1]["sparse_tensors"] == len(stored.graph.sparse_initializer)
    feed = builders.random_inputs(model, 16, seed=3)
    for a, b in zip(run_model(dense, feed), run_model(sparse, feed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sparse_storage_only_where_smaller(tmp_path: Path) -> None:
    """COO with int64 indices costs 12 bytes per kept fp32 value: a 50% sparse weight stays
    dense, a 90% sparse one is stored sparse, and the values round-trip."""
    rng = np.random.default_rng(0)
    half = rng.standard_normal((64, 64)).astype(np.float32)
    half[:, ::2] = 0
    mostly = rng.standard_normal((64, 64)).astype(np.float32)
    mostly[rng.random((64, 64)) < 0.9] = 0
    model = builders.finish(
        "g",
        [
            onnx.helper.make_node("MatMul", ["x", "A"], ["h"]),
            onnx.helper.make_node("MatMul", ["h", "B"], ["y"]),
        ],
        [builders.value_info("x", ["n", 64])],
        [builders.value_info("y", ["n", 64])],
        {"A": half, "B": mostly},
    )
    source = builders.save(model, tmp_path / "m.onnx")
    assert sparse_storage(source, tmp_path / "s.onnx") == 1
    stored = onnx.load(str(tmp_path / "s.onnx"))
    assert [t.name for t in stored.graph.initializer] == ["A"]
    (coo,) = stored.graph.sparse_initializer
    assert coo.values.name == "B" and list(coo.dims) == [64, 64]
    assert coo.indices.data_type == onnx.TensorProto.INT64
    restored = np.zeros(64 * 64, dtype=np.float32)
    restored[numpy_helper.to_array(coo.indices)] = numpy_helper.to_array(coo.values)
    np.testing.assert_array_equal(restored.reshape(64, 64), mostly)


def test_streaming_reader_yields_each_calibration_batch_once_per_pass(tmp_path: Path) -> None:
    model = builders.mlp_gemm()
    _, calib = _prepare(tmp_path, model, samples=70)
    data = open_data(calib, model_input_specs(model))
    selected = np.ones(data.total, dtype=bool)
    selected[:10] = False
    reader = _StreamingReader(data, selected, batch_size=32)
    for _ in range(2):  # a rewind starts a new pass over the same samples
        rows = []
        while (feed := reader.get_next()) is not None:
            rows.append(next(iter(feed.values())).shape[0])
        assert rows == [32, 28]
        reader.rewind()


def test_impossible_combinations_are_refused_in_one_line(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.mlp_gemm()
    path, calib = _prepare(tmp_path, model)
    out = tmp_path / "out.onnx"
    cases: list[tuple[tuple[object, ...], str]] = [
        (("--quantize", "int4"), "--quantize must be one of none, int8"),
        (("--quant-format", "qop"), "--quant-format must be one of qdq, qoperator"),
        (("--quant-calibration", "mse"), "--quant-calibration must be one of"),
        (("--storage", "coo"), "--storage must be one of dense, sparse"),
        (("--per-tensor",), "--per-tensor needs --quantize int8 or int8-dynamic"),
        (("--quantize", "int8-dynamic", "--quant-calibration", "entropy"), "applies to"),
    ]
    for args, message in cases:
        result = cli(path, "--calib", calib, "-o", out, "--sparsity", "0.5", *args)
        assert_refused(result, message, out)
    # External data, in big-model mode: sparse initializers must stay inside the protobuf.
    external = tmp_path / "ext" / "model.onnx"
    external.parent.mkdir()
    onnx.save_model(
        model, str(external), save_as_external_data=True, location="model.data", size_threshold=0
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("onnxprune.io.BIG_MODEL_BYTES", 0)
        result = cli(
            external, "--calib", calib, "-o", out, "--sparsity", "0.5", "--storage", "sparse"
        )
    assert_refused(result, "--storage sparse cannot be combined with external data", out)
    # An already quantized model is not quantized again.
    qdq = builders.qdq_mlp()
    qdq_path, qdq_calib = _prepare(tmp_path, qdq)
    result = cli(
        qdq_path, "--calib", qdq_calib, "-o", out, "--sparsity", "0.5", "--quantize", "int8"
    )
    assert_refused(result, "already quantized", out)


def test_table_shows_each_stage_of_the_artifact(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.mlp_matmul(sizes=(16, 128, 128, 8))
    path, calib = _prepare(tmp_path, model)
    out = tmp_path / "out.onnx"
    result = cli(
        path, "--calib", calib, "-o", out, "--sparsity", "0.9", *FAST,
        "--quantize", "int8", "--storage", "sparse",
    )  # fmt: skip
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    start = lines.index("artifact stages (the last is written; fidelity against the original)")
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[start + 2 : start + 5]}
    assert list(rows) == ["pruned", "pruned + int8", "pruned + int8 + sparse storage"]
    written = rows["pruned + int8 + sparse storage"]
    assert int(written[written.index("storage") + 1].replace(",", "")) == out.stat().st_size
    assert "tensors sparse)" in lines[start + 4]


# -- recipes: the artifact options are recorded and replayed ------------------------------------


@pytest.mark.parametrize(
    "artifact",
    [
        ("--quantize", "int8", "--per-tensor", "--storage", "sparse"),
        ("--quantize", "int8", "--quant-format", "qoperator", "--quant-calibration", "entropy"),
        ("--quantize", "int8-dynamic"),
    ],
)
def test_recipe_replays_the_artifact_byte_identically(
    cli: CliRunner, tmp_path: Path, artifact: tuple[str, ...]
) -> None:
    model = builders.mlp_gemm(sizes=(16, 128, 128, 8))
    path, calib = _prepare(tmp_path, model)
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    code, report, err = _run(cli, path, calib, first, "--sparsity", "0.9", *FAST, *artifact)
    assert code == 0, err
    recipe = json.loads(Path(str(first) + ".recipe.json").read_text())
    assert recipe["deploy"] == {k: report["arguments"][k] for k in recipe["deploy"]}
    assert recipe["deploy"]["quantize"] == artifact[1]
    # Replayed with other artifact options given: the recipe's win, each one named.
    code, replay, err = _run(
        cli, path, calib, second, "--recipe", Path(str(first) + ".recipe.json"),
        "--quantize", "int8-dynamic" if artifact[1] == "int8" else "int8",
    )  # fmt: skip
    assert code == 0, err
    assert second.read_bytes() == first.read_bytes()
    ignored = [w for w in replay["warnings"] if "sets the artifact options" in w]
    assert [w.split()[0] for w in ignored] == ["--quantize"]


def test_recipe_without_artifact_options_takes_the_given_ones(
    cli: CliRunner, tmp_path: Path
) -> None:
    """A recipe written before the artifact options were recorded replays the pruning and
    applies the options given now."""
    model = builders.mlp_gemm()
    path, calib = _prepare(tmp_path, model)
    first = tmp_path / "first.onnx"
    code, _, err = _run(cli, path, calib, first, "--sparsity", "0.5", *FAST)
    assert code == 0, err
    recipe = Path(str(first) + ".recipe.json")
    data = json.loads(recipe.read_text())
    assert data["deploy"]["quantize"] == "none"
    del data["deploy"]
    older = tmp_path / "older.recipe.json"
    older.write_text(json.dumps(data))
    out = tmp_path / "int8.onnx"
    code, report, err = _run(cli, path, calib, out, "--recipe", older, "--quantize", "int8")
    assert code == 0, err
    assert [s["name"] for s in report["artifact_stages"]] == ["pruned", "pruned + int8"]
    assert not any("artifact options" in w for w in report["warnings"])


@pytest.mark.parametrize(
    ("deploy", "words"),
    [
        ({"quantize": "int4"}, ("--quantize must be one of",)),
        ({"quantize": None}, ("--quantize must be one of",)),
        ({"per_channel": "yes"}, ("--per-channel must be true or false",)),
        ({"storage": ["sparse"]}, ("--storage must be one of",)),
        ({"output_format": "tflite"}, ("--format must be one of",)),
        ({"quant_format": "qdq"}, ("--quant-format needs --quantize",)),
        ({"colour": "blue"}, ("unknown option", "colour")),
        ("int8", ("'deploy' must be",)),
    ],
)
def test_recipe_artifact_options_are_checked(
    cli: CliRunner, tmp_path: Path, deploy: object, words: tuple[str, ...]
) -> None:
    model = builders.mlp_gemm()
    path, calib = _prepare(tmp_path, model)
    first = tmp_path / "first.onnx"
    code, _, err = _run(cli, path, calib, first, "--sparsity", "0.5", *FAST)
    assert code == 0, err
    data = json.loads(Path(str(first) + ".recipe.json").read_text())
    data["deploy"] = {**data["deploy"], **deploy} if isinstance(deploy, dict) else deploy
    edited = tmp_path / "edited.recipe.json"
    edited.write_text(json.dumps(data))
    out = tmp_path / "out" / "p.onnx"
    out.parent.mkdir()
    result = cli(path, "--calib", calib, "--recipe", edited, "-o", out, "-q")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert all(word in result.err for word in ("recipe", *words)), result.err
    assert list(out.parent.iterdir()) == []


# -- --format ort: onnxruntime's mobile format ----------------------------------------------------


@pytest.mark.parametrize("artifact", [(), ("--quantize", "int8", "--storage", "sparse")])
def test_ort_format_loads_in_onnxruntime_and_matches(
    cli: CliRunner, tmp_path: Path, artifact: tuple[str, ...]
) -> None:
    model = builders.cnn_bn()
    path, calib = _prepare(tmp_path, model)
    onnx_out, ort_out = tmp_path / "same.onnx", tmp_path / "mobile.ort"
    args = ("--sparsity", "0.85", *FAST, *artifact)
    code, _, err = _run(cli, path, calib, onnx_out, *args)
    assert code == 0, err
    code, report, err = _run(cli, path, calib, ort_out, *args, "--format", "ort")
    assert code == 0, err
    assert ort_out.read_bytes()[4:8] == b"ORTM"  # the flatbuffer's file identifier
    stages = report["artifact_stages"]
    assert stages[-1]["name"].endswith("as .ort")
    assert stages[-1]["file_size"] == ort_out.stat().st_size == report["file_size_after"]
    assert report["fidelity"] == stages[-1]["fidelity"]
    # The op table describes the ONNX graph that was converted.
    if artifact:
        assert report["op_counts"]["DequantizeLinear"][1] > 0
    # The same model as the .onnx artifact of the same run: onnxruntime's converter fuses
    # (Conv + BatchNormalization...), so float rounding may move, nothing more.
    feed = builders.random_inputs(model, 16, seed=5)
    for a, b in zip(run_model(onnx_out, feed), run_model(ort_out, feed), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max()))
    # A replay writes the same model (onnxruntime's serialisation order may vary, the size and
    # the outputs do not).
    replayed = tmp_path / "replayed.ort"
    code, _, err = _run(cli, path, calib, replayed, "--recipe", Path(str(ort_out) + ".recipe.json"))
    assert code == 0, err
    assert replayed.stat().st_size == ort_out.stat().st_size
    for a, b in zip(run_model(ort_out, feed), run_model(replayed, feed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ort_format_default_name_and_refusals(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.mlp_gemm()
    path, calib = _prepare(tmp_path, model)
    # Without -o: <model>.pruned.ort.
    result = cli(path, "--calib", calib, "--sparsity", "0.5", *FAST, "--format", "ort", "-q")
    assert result.code == 0, result.err
    assert (tmp_path / "model.pruned.ort").read_bytes()[4:8] == b"ORTM"
    out = tmp_path / "out" / "x.onnx"
    out.parent.mkdir()
    result = cli(path, "--calib", calib, "-o", out, "--sparsity", "0.5", "--format", "ort")
    assert result.code == 2 and "name the output NAME.ort (-o x.ort" in result.err
    assert len(result.err.strip().splitlines()) == 1
    external = tmp_path / "ext" / "model.onnx"
    external.parent.mkdir()
    onnx.save_model(
        model, str(external), save_as_external_data=True, location="model.data", size_threshold=0
    )
    ort_out = out.with_suffix(".ort")
    with pytest.MonkeyPatch.context() as patch:  # big-model mode
        patch.setattr("onnxprune.io.BIG_MODEL_BYTES", 0)
        result = cli(
            external, "--calib", calib, "-o", ort_out, "--sparsity", "0.5", "--format", "ort"
        )
    assert result.code == 2 and "--format ort cannot hold external data" in result.err
    assert len(result.err.strip().splitlines()) == 1
    result = cli(path, "--calib", calib, "-o", ort_out, "--sparsity", "0.5", "--format", "tflite")
    assert result.code == 2 and "--format must be one of onnx, ort" in result.err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("quantize", "given", "bound"),
    [
        (("int8",), (), 64),  # static: 7-bit weights by default
        (("int8",), ("--quant-range", "full"), 127),
        (("int8-dynamic",), (), 127),  # dynamic: full range by default
        (("int8-dynamic",), ("--quant-range", "reduced"), 64),
    ],
)
def test_quant_range_bounds_the_int8_weights(
    cli: CliRunner, tmp_path: Path, quantize: tuple[str, ...], given: tuple[str, ...], bound: int
) -> None:
    """Reduced range keeps |q| <= 64 (onnxruntime's x86 kernels without VNNI sum u8 x s8
    pairs in int16 and saturate on full-range weights); every weight reaches its bound in
    some channel (symmetric per-channel scales map each channel's max to it)."""
    model = builders.mlp_matmul(sizes=(16, 64, 64, 8))
    path, calib = _prepare(tmp_path, model)
    out = tmp_path / "q.onnx"
    code, report, err = _run(cli, path, calib, out, "--sparsity", "0.5", *FAST,
                             "--quantize", *quantize, *given)  # fmt: skip
    assert code == 0, err
    quantized = {k: v for k, v in builders.stored_weights(out).items() if k.endswith("_quantized")}
    weights = [v for v in quantized.values() if v.dtype == np.int8]
    assert weights
    assert max(int(np.abs(w.astype(np.int64)).max()) for w in weights) == bound
    assert report["arguments"]["quant_range"] == (given[1] if given else None)
    result = cli(path, "--calib", calib, "-o", tmp_path / "x.onnx", "--sparsity", "0.5",
                 "--quant-range", "full")  # fmt: skip
    assert result.code == 2 and "--quant-range needs --quantize" in result.err


def test_the_quantizers_log_warnings_become_one_note(capsys: pytest.CaptureFixture[str]) -> None:
    """onnxruntime's quantizer warns through ``logging`` (its own loggers, or the root one via
    ``logging.warning``): inside the quantization those warnings are not printed but end as
    one report note; onnxprune's own records are left to its handler, and the root logger's
    handlers are restored."""
    import logging

    from onnxprune.deploy.quantize import _quantizer_warnings

    root = logging.getLogger()
    before = root.handlers[:]
    notes: list[str] = []
    with _quantizer_warnings(notes):
        logging.warning("Axis 1 is out-of-range for weight 'ln.weight' with rank 1")
        logging.getLogger("onnxruntime.quantization.base").warning("another")
        logging.getLogger("onnxprune.deploy").warning("ours")
        logging.getLogger("onnxruntime.quantization.base").info("not a warning")
    assert notes == [
        "onnxruntime's quantizer warned: Axis 1 is out-of-range for weight 'ln.weight' with "
        "rank 1 (and 1 more warnings)"
    ]
    assert root.handlers == before
    assert "out-of-range" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "name"), [(("--storage", "sparse"), "o.onnx"), (("--format", "ort"), "o.ort")]
)
def test_a_small_model_with_external_data_is_written_in_one_file(
    cli: CliRunner, tmp_path: Path, args: tuple[str, ...], name: str
) -> None:
    """A model under the big-model size whose weights sit in an external file (torch's dynamo
    exporter writes even tiny ones that way) can be stored sparse or as .ort: the output is
    one file, with a warning, and gives the outputs of the same pruning written with
    external data."""
    model = builders.mlp_gemm()
    path, calib = _prepare(tmp_path, model)
    external = tmp_path / "ext" / "model.onnx"
    external.parent.mkdir()
    onnx.save_model(
        model, str(external), save_as_external_data=True, location="model.data", size_threshold=0
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / name
    result = cli(external, "--calib", calib, "-o", out, "--sparsity", "0.5", *FAST, *args, "-q")
    assert result.code == 0, result.err
    assert "written inside the output file" in result.err
    assert sorted(p.name for p in out_dir.iterdir()) == [name, f"{name}.recipe.json"]
    plain = tmp_path / "plain.onnx"
    result = cli(path, "--calib", calib, "-o", plain, "--sparsity", "0.5", *FAST, "-q")
    assert result.code == 0, result.err
    x = np.load(calib)["x"][:8]
    np.testing.assert_allclose(
        run_model(out, {"x": x})[0], run_model(plain, {"x": x})[0], rtol=1e-5, atol=1e-6
    )
