"""The compact artifact: the quantized file without the quantizer's waste, and embedding
tables (Gather on a weight) stored in int8 / int4 and optionally pruned per row.

Differential checks: onnxruntime runs each artifact; the compacted file gives bit-identical
outputs; pruned table entries gather back as exact zeros; outputs stay close to the original.
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

from onnxprune.compact import compact
from onnxprune.embeddings import INT4_BLOCK, embedding_tables, int4_tables, prune_tables

FAST = ("--no-update", "--allocation", "group")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _encoder(tmp_path: Path) -> tuple[onnx.ModelProto, Path, Path]:
    model = builders.embedding_encoder()
    path = builders.save(model, tmp_path / "encoder.onnx")
    calib = builders.write_npz(tmp_path / "ids.npz", builders.token_ids(128, seed=1))
    return model, path, calib


def _run(cli: CliRunner, model: Path, calib: Path, out: Path, *args: object) -> dict[str, Any]:
    report = out.with_name(out.stem + ".report.json")
    result = cli(model, "--calib", calib, "-o", out, "--report", report, "-q", *args)
    assert result.code == 0, result.err
    return json.loads(report.read_text())  # type: ignore[no-any-return]


def _quantized_reference(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """onnxruntime's static QDQ quantization of a small CNN, as the quantizer writes it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    model = builders.cnn_bn()
    source = builders.save(model, tmp_path / "cnn.onnx")
    feeds = [builders.random_inputs(model, 8, seed=s) for s in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    quantized = tmp_path / "cnn.int8.onnx"
    quantize_static(
        str(source),
        str(quantized),
        Reader(),
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"WeightSymmetric": True},
    )
    return quantized, builders.random_inputs(model, 16, seed=9)


def test_compaction_is_bit_exact_smaller_and_keeps_given_names(tmp_path: Path) -> None:
    quantized, feed = _quantized_reference(tmp_path)
    # With inferred shapes, as onnxprune's pre-processed quantization writes them.
    model = onnx.shape_inference.infer_shapes(onnx.load(str(quantized)))
    onnx.save_model(model, str(quantized))
    model.graph.node[0].doc_string = "written by a tool"
    keep = {model.graph.node[0].output[0]}
    small = compact(model, keep)
    onnx.checker.check_model(small, full_check=True)
    assert small.ByteSize() < model.ByteSize()
    assert all(node.name == "" and node.doc_string == "" for node in small.graph.node)
    # Inferred shapes stay (onnxruntime's fusions read them), under the tensors' new names.
    produced = {n for node in small.graph.node for n in node.output}
    live = {n for node in model.graph.node for n in node.output}
    assert len(small.graph.value_info) == len([v for v in model.graph.value_info if v.name in live])
    assert len(small.graph.value_info) > 0
    assert {v.name for v in small.graph.value_info} <= produced
    assert {o.domain for o in small.opset_import} <= {"", "ai.onnx"}
    # Every initializer, graph input / output and kept tensor name survives; others shrink.
    assert [t.name for t in small.graph.initializer] == [t.name for t in model.graph.initializer]
    assert small.graph.node[0].output[0] in keep
    assert [i.name for i in small.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in small.graph.output] == [o.name for o in model.graph.output]
    before = {n for node in model.graph.node for n in node.output}
    after = {n for node in small.graph.node for n in node.output}
    assert sum(map(len, after)) < sum(map(len, before))
    for a, b in zip(
        run_model(quantized, feed), run_model(small.SerializeToString(), feed), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_quantized_artifact_is_written_compacted(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.cnn_bn()
    path, calib = builders.save_with_calibration(model, tmp_path, 64, name="cnn.onnx")
    out = tmp_path / "out.onnx"
    report = _run(cli, path, calib, out, "--sparsity", "0.7", *FAST, "--quantize", "int8")
    written = onnx.load(str(out))
    assert all(node.name == "" for node in written.graph.node)
    assert {o.domain for o in written.opset_import} <= {"", "ai.onnx"}
    # No "<tensor>_DequantizeLinear_Output" names left: the quantizer's are shortened.
    assert not any(n.endswith("_Output") for node in written.graph.node for n in node.output)
    assert report["artifact_stages"][-1]["file_size"] == out.stat().st_size
    feed = builders.random_inputs(model, 16, seed=4)
    for a, b in zip(run_model(path, feed), run_model(out, feed), strict=True):
        assert _cosine(a, b) > 0.9


def test_embedding_tables_are_the_float_gather_weights() -> None:
    model = builders.embedding_encoder()
    assert set(embedding_tables(model)) == {"word_emb", "pos_emb"}
    # A table also used by a MatMul (tied weights) is not an embedding table here.
    tied = builders.embedding_encoder()
    tied.graph.node.append(onnx.helper.make_node("MatMul", ["normed", "word_emb"], ["logits"]))
    assert set(embedding_tables(tied)) == {"pos_emb"}


def test_embedding_sparsity_prunes_within_rows_never_whole_rows() -> None:
    model = builders.embedding_encoder(vocab=96, hidden=64)
    original = builders.stored_weights(model)
    assert prune_tables(model, 0.75) == 2
    pruned = builders.stored_weights(model)
    for name in ("word_emb", "pos_emb"):
        table, before = pruned[name], original[name]
        zeros = (table == 0).sum(axis=1)
        assert np.all(zeros == 48), name  # 0.75 of 64 in every row, none more
        # The kept entries are each row's largest magnitudes, unchanged.
        kept_min = np.where(table != 0, np.abs(before), np.inf).min(axis=1)
        dropped_max = np.where(table == 0, np.abs(before), 0).max(axis=1)
        assert np.all(kept_min >= dropped_max)
        np.testing.assert_array_equal(table[table != 0], before[table != 0])
    for name in ("fc1_w", "fc2_w"):  # not embedding tables
        np.testing.assert_array_equal(pruned[name], original[name])


def test_int4_tables_gather_back_zeros_exactly_and_close_values(tmp_path: Path) -> None:
    model = builders.embedding_encoder()
    prune_tables(model, 0.5)
    pruned = builders.save(model, tmp_path / "pruned.onnx")
    table = builders.stored_weights(model)["word_emb"]
    assert int4_tables(model) == 2
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GatherBlockQuantized") == 2 and "Gather" not in ops
    stored = {t.name: t for t in model.graph.initializer}
    assert stored["word_emb_int4"].data_type == onnx.TensorProto.INT4
    assert list(stored["word_emb_scales"].dims) == [96, 64 // INT4_BLOCK]
    int4 = builders.save(model, tmp_path / "int4.onnx")
    feed = builders.token_ids(32, seed=3)
    (_, want), (_, got) = run_model(pruned, feed), run_model(int4, feed)
    rows = table[feed["ids"]]  # [batch, seq, hidden]: what the Gather picks
    np.testing.assert_array_equal(got[rows == 0], 0.0)  # pruned entries stay exact zeros
    # onnxruntime's symmetric int4: step = a block's absmax / 8 (the extreme maps to -8, the
    # other side clips at 7): every entry within one step, most within half a step.
    step = np.abs(rows.reshape(*rows.shape[:2], -1, INT4_BLOCK)).max(axis=-1) / 8
    error = np.abs(got - want).reshape((*step.shape, INT4_BLOCK))
    assert np.all(error <= step[..., None] * (1 + 1e-5))
    assert np.mean(error <= step[..., None] * (0.5 + 1e-5)) > 0.95
    assert _cosine(got, want) > 0.99


@pytest.mark.parametrize("quantize", ["int8", "int8-dynamic"])
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_embeddings_keep_pruned_zeros_and_run(
    cli: CliRunner, tmp_path: Path, quantize: str, bits: int
) -> None:
    model, path, calib = _encoder(tmp_path)
    out = tmp_path / f"out_{bits}.onnx"
    report = _run(
        cli, path, calib, out, "--sparsity", "0.5", *FAST, "--quantize", quantize,
        "--embedding-bits", bits, "--embedding-sparsity", "0.5",
    )  # fmt: skip
    names = [s["name"] for s in report["artifact_stages"]]
    suffix = " (int4 embeddings)" if bits == 4 else ""
    assert names == [
        "pruned",
        "pruned + embeddings 0.5",
        f"pruned + embeddings 0.5 + {quantize}{suffix}",
    ]
    written = onnx.load(str(out))
    ops = {n.op_type for n in written.graph.node}
    stored = {t.name: t for t in written.graph.initializer}
    assert "word_emb" not in stored  # no fp32 copy of the table is left
    if bits == 4:
        assert "GatherBlockQuantized" in ops
        assert stored["word_emb_int4"].data_type == onnx.TensorProto.INT4
    else:  # onnxruntime's int8 Gather quantization: one scale per table
        table = numpy_helper.to_array(stored["word_emb_quantized"])
        assert table.dtype in (np.int8, np.uint8) and table.shape == (96, 64)
    feed = builders.token_ids(32, seed=5)
    pruned_table = prune_tables(model, 0.5) and builders.stored_weights(model)["word_emb"]
    reference = run_model(path, feed)
    y, tokens = run_model(out, feed)
    assert isinstance(pruned_table, np.ndarray)
    np.testing.assert_array_equal(tokens[pruned_table[feed["ids"]] == 0], 0.0)
    assert _cosine(tokens, reference[1]) > 0.8
    assert _cosine(y, reference[0]) > 0.8


def test_int4_embeddings_make_the_file_smaller(cli: CliRunner, tmp_path: Path) -> None:
    _, path, calib = _encoder(tmp_path)
    sizes = {}
    for bits in (8, 4):
        out = tmp_path / f"q{bits}.onnx"
        report = _run(
            cli, path, calib, out, "--sparsity", "0.5", *FAST, "--quantize", "int8-dynamic",
            "--embedding-bits", bits,
        )  # fmt: skip
        sizes[bits] = out.stat().st_size
        assert report["arguments"]["embedding_bits"] == bits
    # The two tables hold 102 x 64 entries: 6528 bytes in int8, 3264 in int4 plus 102 x 2
    # fp32 block scales (816 bytes): about 2.4 KB saved.
    assert sizes[8] - sizes[4] > 2000


def test_embedding_sparsity_with_sparse_storage_is_identical_and_smaller(
    cli: CliRunner, tmp_path: Path
) -> None:
    _, path, calib = _encoder(tmp_path)
    dense, sparse = tmp_path / "dense.onnx", tmp_path / "sparse.onnx"
    args = ("--sparsity", "0.8", *FAST, "--embedding-sparsity", "0.8")
    _run(cli, path, calib, dense, *args)
    report = _run(cli, path, calib, sparse, *args, "--storage", "sparse")
    stored = onnx.load(str(sparse))
    assert "word_emb" in {s.values.name for s in stored.graph.sparse_initializer}
    # 12 bytes (fp32 value + int64 index) per kept entry against 4 dense: 0.6x at 0.8.
    assert sparse.stat().st_size < 0.65 * dense.stat().st_size
    # Without pruning the tables, sparse storage leaves them dense (a 0.0 row stays 4 bytes).
    tables_dense = tmp_path / "tables_dense.onnx"
    _run(cli, path, calib, tables_dense, "--sparsity", "0.8", *FAST, "--storage", "sparse")
    # The word table (96 x 64 fp32, 24.6 KB) at 0.8: 0.2 x 12 bytes per entry, 40% saved.
    assert tables_dense.stat().st_size - sparse.stat().st_size > 0.35 * 96 * 64 * 4
    assert report["artifact_stages"][-1]["name"] == "pruned + embeddings 0.8 + sparse storage"
    feed = builders.token_ids(16, seed=2)
    for a, b in zip(run_model(dense, feed), run_model(sparse, feed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_embedding_options_are_checked_in_one_line(cli: CliRunner, tmp_path: Path) -> None:
    _, path, calib = _encoder(tmp_path)
    out = tmp_path / "out.onnx"
    cases: list[tuple[tuple[object, ...], str]] = [
        (("--quantize", "int8", "--embedding-bits", "3"), "--embedding-bits must be 8 or 4"),
        (("--embedding-bits", "4"), "--embedding-bits needs --quantize int8 or int8-dynamic"),
        (("--embedding-sparsity", "1"), "--embedding-sparsity must be in [0, 1)"),
        (
            ("--quantize", "int8", "--embedding-bits", "4", "--format", "ort"),
            "--embedding-bits 4 cannot be written with --format ort",
        ),
        (("--embedding-sparsity", "-0.1"), "--embedding-sparsity must be in [0, 1)"),
    ]
    for args, message in cases:
        result = cli(path, "--calib", calib, "-o", out, "--sparsity", "0.5", *args)
        assert_refused(result, message, out)


def test_no_embedding_table_is_a_note_not_an_error(cli: CliRunner, tmp_path: Path) -> None:
    model = builders.mlp_matmul()
    path, calib = builders.save_with_calibration(model, tmp_path, 64, name="mlp.onnx")
    out = tmp_path / "out.onnx"
    report = _run(
        cli, path, calib, out, "--sparsity", "0.5", *FAST, "--quantize", "int8-dynamic",
        "--embedding-bits", "4", "--embedding-sparsity", "0.5",
    )  # fmt: skip
    assert any(
        "--embedding-sparsity: the model has no embedding table" in w for w in report["warnings"]
    )
    assert any(
        "--embedding-bits 4: the model has no embedding table" in w for w in report["warnings"]
    )


def test_gates_and_search_judge_the_pruned_tables(cli: CliRunner, tmp_path: Path) -> None:
    """--embedding-sparsity without --quantize: the gates judge the file with pruned tables
    (the ``tokens`` output is the gathered word table itself), and --sparsity auto too."""
    _, path, calib = _encoder(tmp_path)
    probe = tmp_path / "probe.onnx"
    report = _run(
        cli, path, calib, probe, "--sparsity", "0.3", *FAST, "--embedding-sparsity", "0.9"
    )
    before, after = (
        min(o["cosine"] for o in s["fidelity"]["outputs"]) for s in report["artifact_stages"]
    )
    assert after < before - 0.05
    gate = (before + after) / 2
    out = tmp_path / "gated.onnx"
    result = cli(
        path, "--calib", calib, "-o", out, "-q", "--sparsity", "0.3", *FAST,
        "--embedding-sparsity", "0.9", "--min-cosine", gate,
    )  # fmt: skip
    assert result.code == 5 and "fidelity gate failed" in result.err
    assert not out.exists()
    # --sparsity auto measures each candidate with its tables pruned: no sparsity passes.
    result = cli(
        path, "--calib", calib, "-o", out, "-q", "--sparsity", "auto", *FAST,
        "--embedding-sparsity", "0.9", "--min-cosine", gate,
    )  # fmt: skip
    assert result.code == 5, result.err
    assert not out.exists()
    # The same search without pruning the tables finds a sparsity above the gate.
    result = cli(
        path, "--calib", calib, "-o", out, "-q", "--sparsity", "auto", *FAST,
        "--min-cosine", gate,
    )  # fmt: skip
    assert result.code == 0, result.err
