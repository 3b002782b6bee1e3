"""The fidelity metric (onnxprune.metric): what it sees that plain cosine does not, the gate on
it, the detector and padded-sequence cases, and the parsing of --metric / --metric-output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from conftest import CliRunner
from onnx import TensorProto, helper, numpy_helper
from ort_run import first_output

from onnxprune import prune
from onnxprune.calibrate.sources import model_input_specs, open_data
from onnxprune.checks import Gates
from onnxprune.errors import UsageError
from onnxprune.metric import (
    Metric,
    check_kind,
    decision_score,
    parse_metric_output,
    suggest_for_model,
    suggest_preset,
)
from onnxprune.verify import ReferenceRun

RNG = np.random.default_rng(0)


def _compare(original: Path, candidate: Path, data: Path, metric: Metric) -> ReferenceRun:
    specs = model_input_specs(onnx.load(str(original)))
    dataset = open_data(data, specs)
    selected = np.ones(dataset.total, dtype=bool)
    return ReferenceRun(original, dataset, selected, 16, "test", metric=metric)


# -- a large barely-changing block beside a small sensitive one -------------------------------
#
#   x [B, 32] --Add(1000 + 0.5 x)--> big [B, 4]   (no weights: never pruned; ~1000 +- 1)
#   x [B, 32] --Gemm(W [16, 32])--->  small [B, 16] (~ +-0.5)
#   Concat(axis 1) -> out [B, 20]


def _two_blocks(tmp_path: Path) -> tuple[Path, Path]:
    x = builders.value_info("x", ["batch", 32])
    out = builders.value_info("out", ["batch", 20])
    weight = (RNG.normal(size=(16, 32)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["x4"]),
        helper.make_node("Mul", ["x4", "half"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["big"]),
        helper.make_node("Gemm", ["x", "W", "b"], ["small"], transB=1, name="small_fc"),
        helper.make_node("Concat", ["big", "small"], ["out"], axis=1),
    ]
    inits = {
        "starts": np.array([0], np.int64),
        "ends": np.array([4], np.int64),
        "axes": np.array([1], np.int64),
        "half": np.array(0.5, np.float32),
        "offset": np.full(4, 1000.0, np.float32),
        "W": weight,
        "b": np.zeros(16, np.float32),
    }
    two_blocks = builders.finish("two_blocks", nodes, [x], [out], inits, producer="")
    model = builders.save(two_blocks, tmp_path / "m.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, x=RNG.normal(size=(200, 32)).astype(np.float32))
    return model, data


def _with_small_block(model: Path, out: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """``model`` with the small block's weight ``W`` replaced by ``change(W)``, saved to ``out``."""
    damaged = onnx.load(str(model))
    for init in damaged.graph.initializer:
        if init.name == "W":
            changed = np.ascontiguousarray(change(numpy_helper.to_array(init)))
            init.CopyFrom(numpy_helper.from_array(changed, "W"))
    onnx.save(damaged, str(out))


def test_standardized_catches_small_block_damage_cosine_misses(tmp_path: Path) -> None:
    model, data = _two_blocks(tmp_path)
    # The same model with the small block's weights halved and shuffled (heavy damage there).
    _with_small_block(model, tmp_path / "damaged.onnx", lambda w: w[::-1] * 0.5)
    run = _compare(model, tmp_path / "damaged.onnx", data, Metric())
    fidelity = run.compare(tmp_path / "damaged.onnx")
    # Plain cosine: the ~1000 block dominates, the damage is invisible.
    assert fidelity.outputs[0].cosine > 0.9999
    # Standardized: 16 of 20 features lost most of their signal.
    assert fidelity.score is not None and fidelity.score < 0.5
    assert decision_score(fidelity) == fidelity.score
    assert not Gates(min_cosine=0.999).check(fidelity)
    failures = Gates(min_score=0.9).check(fidelity)
    assert [f.option for f in failures] == ["--min-score"]
    # A slice on the small block alone agrees with the whole-output score's small part.
    sliced = _compare(model, tmp_path / "damaged.onnx", data, Metric(outputs=["out[:,4:]"]))
    small_score = sliced.compare(tmp_path / "damaged.onnx").score
    assert small_score is not None and small_score < fidelity.score


def test_gate_fails_on_pruned_small_block(tmp_path: Path) -> None:
    """End to end: pruning the small block passes --min-cosine 0.999 and fails --min-score."""
    model, data = _two_blocks(tmp_path)
    common = {"sparsity": 0.9, "min_row_weights": 0, "update": False, "group": "row"}
    passed = prune(model, data, output=tmp_path / "a.onnx", min_cosine=0.999, **common)
    assert passed.exit_code == 0 and passed.output_written
    assert passed.fidelity is not None and passed.fidelity.score is not None
    assert passed.fidelity.score < 0.8
    failed = prune(model, data, output=tmp_path / "b.onnx", min_score=0.9, **common)
    assert failed.exit_code == 5 and not (tmp_path / "b.onnx").exists()
    assert failed.gate_failures[0].option == "--min-score"
    # --metric cosine: the old behaviour, and the same gate then passes.
    old = prune(model, data, output=tmp_path / "c.onnx", min_score=0.9, metric="cosine", **common)
    assert old.exit_code == 0


def test_streamed_standardized_matches_one_shot_formula(tmp_path: Path) -> None:
    """Folding per batch (batch 16 over 200 samples) gives the formula on all samples at once."""
    model, data = _two_blocks(tmp_path)
    _with_small_block(
        model,
        tmp_path / "damaged.onnx",
        lambda w: w + RNG.normal(size=w.shape).astype(np.float32) * 0.03,
    )
    score = _compare(model, tmp_path / "damaged.onnx", data, Metric()).compare(
        tmp_path / "damaged.onnx"
    )
    x = np.load(data)["x"]
    a = first_output(model, {"x": x}).astype(np.float64)
    b = first_output(tmp_path / "damaged.onnx", {"x": x}).astype(np.float64)
    nmse = ((b - a) ** 2).mean(0) / a.var(0)
    assert score.score == pytest.approx(1 - np.minimum(nmse, 1).mean(), rel=1e-6)


# -- detector: [B, 4 + C, A] ----------------------------------------------------------------
#
#   x [B, 8, A=64] --Conv1x1(box_head [4, 8]) * 300 + 320--> boxes [B, 4, A] (pixels)
#                  --Conv1x1(cls_head [6, 8]) -> Sigmoid ---> scores [B, 6, A] in (0, 1)
#   Concat(axis 1) -> output0 [B, 10, A]


def _detector(tmp_path: Path) -> tuple[Path, Path]:
    x = builders.value_info("images", ["batch", 8, 64])
    out = builders.value_info("output0", ["batch", 10, 64])
    nodes = [
        helper.make_node("Conv", ["images", "box_w", "box_b"], ["box_raw"], name="box_head"),
        helper.make_node("Mul", ["box_raw", "scale"], ["box_scaled"]),
        helper.make_node("Add", ["box_scaled", "shift"], ["boxes"]),
        helper.make_node("Conv", ["images", "cls_w", "cls_b"], ["logits"], name="cls_head"),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
    ]
    inits = {
        "box_w": RNG.normal(size=(4, 8, 1)).astype(np.float32) * 0.1,
        "box_b": np.zeros(4, np.float32),
        "scale": np.array(300.0, np.float32),
        "shift": np.array(320.0, np.float32),
        "cls_w": RNG.normal(size=(6, 8, 1)).astype(np.float32),
        "cls_b": np.full(6, -1.0, np.float32),
    }
    detector = builders.finish("detector", nodes, [x], [out], inits, producer="")
    model = builders.save(detector, tmp_path / "det.onnx")
    data = tmp_path / "det.npz"
    np.savez(data, images=RNG.normal(size=(96, 8, 64)).astype(np.float32))
    return model, data


def test_detector_score_cells_differential(tmp_path: Path) -> None:
    model, data = _detector(tmp_path)
    assert suggest_for_model(onnx.load(str(model)))[0] == "detector"  # type: ignore[index]
    out = tmp_path / "det.pruned.onnx"
    report = prune(
        model,
        data,
        sparsity=0.75,
        output=out,
        exclude=["box_head"],  # the boxes barely move, like a real detector's
        min_row_weights=0,
        update=False,
        group="row",
        metric="detector",
        keep_on_fail=True,
        min_cosine=0.99,
        min_score=0.9,
    )
    fidelity = report.fidelity
    assert fidelity is not None and fidelity.score is not None
    # Plain cosine is blind (the pixel boxes dominate); the detector metric is not.
    assert fidelity.outputs[0].cosine > 0.99
    assert [f.option for f in report.gate_failures] == ["--min-score"]
    # Differential: run both models in ORT on the held-out samples and recompute the cells'
    # intersection over union at 0.25 by hand.
    pruner_holdout = _holdout(data, report.fidelity.samples if report.fidelity else 0)
    a = first_output(model, {"images": pruner_holdout})[:, 4:]
    b = first_output(out, {"images": pruner_holdout})[:, 4:]
    on_a, on_b = a > 0.25, b > 0.25
    iou = (on_a & on_b).sum() / (on_a | on_b).sum()
    assert fidelity.metric_parts["output0[:,4:] cells"] == pytest.approx(iou)
    assert iou < 0.9
    assert "output0[:,:4] standardized" in fidelity.metric_parts


def _holdout(data: Path, count: int) -> np.ndarray:
    """The samples the default split holds out (seed 0, 10%): see pipeline.split_samples."""
    images = np.load(data)["images"]
    order = np.random.default_rng(0).permutation(len(images))
    assert count == int(np.ceil(0.1 * len(images)))
    return images[np.sort(order[:count])]


# -- padded sequences -----------------------------------------------------------------------
#
#   input_ids [B, S] --Gather(embedding [50, 8])--> hidden [B, S, 8]
#   candidate: hidden + 5 * (1 - attention_mask)[..., None]  (differs at padding only)


def _encoder(tmp_path: Path, noise_at_padding: bool) -> Path:
    ids = builders.value_info("input_ids", ["batch", "seq"], builders.INT64)
    mask = builders.value_info("attention_mask", ["batch", "seq"], builders.INT64)
    out = builders.value_info("hidden", ["batch", "seq", 8])
    table = _TABLE
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["embedded"])]
    inits = {"table": table}
    if noise_at_padding:
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["one", "maskf"], ["padding"]),
            helper.make_node("Unsqueeze", ["padding", "last"], ["padding3"]),
            helper.make_node("Mul", ["padding3", "five"], ["noise"]),
            helper.make_node("Add", ["embedded", "noise"], ["hidden"]),
        ]
        inits |= {
            "one": np.array(1.0, np.float32),
            "last": np.array([-1], np.int64),
            # Uneven over the features, so even the argmax at padded positions changes.
            "five": np.linspace(-5, 5, 8).astype(np.float32),
        }
    else:
        nodes += [
            helper.make_node("Identity", ["embedded"], ["hidden"]),
            helper.make_node("Identity", ["attention_mask"], ["unused"]),
        ]
    name = "noisy" if noise_at_padding else "encoder"
    encoder = builders.finish(name, nodes, [ids, mask], [out], inits, producer="")
    return builders.save(encoder, tmp_path / f"{name}.onnx")


_TABLE = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)


@pytest.mark.parametrize("kind", ["standardized", "pooled", "cosine", "top1", "encoder"])
def test_padding_positions_are_excluded(tmp_path: Path, kind: str) -> None:
    original = _encoder(tmp_path, noise_at_padding=False)
    noisy = _encoder(tmp_path, noise_at_padding=True)
    lengths = np.random.default_rng(2).integers(3, 12, size=40)
    mask = (np.arange(12)[None, :] < lengths[:, None]).astype(np.int64)  # [40, 12]
    ids = np.random.default_rng(3).integers(0, 50, size=(40, 12)) * mask
    data = tmp_path / "tokens.npz"
    np.savez(data, input_ids=ids, attention_mask=mask)
    masked = _compare(original, noisy, data, Metric(kind, sample_mask="attention_mask"))
    fidelity = masked.compare(noisy)
    assert fidelity.score == pytest.approx(1.0)
    # The plain cosine counts the padded positions, and so does the metric without the mask.
    assert fidelity.outputs[0].cosine < 0.95
    unmasked = _compare(original, noisy, data, Metric(kind)).compare(noisy)
    assert unmasked.score is not None and unmasked.score < 0.95


# -- parts and kinds ------------------------------------------------------------------------


def test_integer_outputs_scored_by_agreement_and_topk(tmp_path: Path) -> None:
    """[B, 10] logits plus their ArgMax [B] (int64): the ids by exact agreement; top1/top5 of
    the logits agree with a count by hand."""
    x = builders.value_info("x", ["batch", 10])
    logits = builders.value_info("logits", ["batch", 10])
    ids = builders.value_info("ids", ["batch"], builders.INT64)

    def model(name: str, weight: np.ndarray) -> Path:
        nodes = [
            helper.make_node("MatMul", ["x", "W"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["ids"], axis=1, keepdims=0),
        ]
        classifier = builders.finish(name, nodes, [x], [logits, ids], {"W": weight}, producer="")
        return builders.save(classifier, tmp_path / f"{name}.onnx")

    weight = np.eye(10, dtype=np.float32)
    original = model("orig", weight)
    candidate = model("cand", weight + RNG.normal(size=(10, 10)).astype(np.float32) * 0.4)
    data = tmp_path / "x.npz"
    x_data = RNG.normal(size=(64, 10)).astype(np.float32)
    np.savez(data, x=x_data)
    fidelity = _compare(original, candidate, data, Metric("classifier")).compare(candidate)
    a, b = first_output(original, {"x": x_data}), first_output(candidate, {"x": x_data})
    top1 = float((a.argmax(1) == b.argmax(1)).mean())
    rank = (b > np.take_along_axis(b, a.argmax(1)[:, None], 1)).sum(1)
    parts = fidelity.metric_parts
    assert parts["logits top1"] == pytest.approx(top1)
    assert parts["logits top5"] == pytest.approx(float((rank < 5).mean()))
    assert parts["ids agreement"] == pytest.approx(top1)  # ids are the argmax
    assert 0.0 < top1 < 1.0
    assert fidelity.score == pytest.approx(np.mean(list(parts.values())))
    # A preset on a slice: the classifier's kinds for the first five logits (no top5 of 5).
    sliced = _compare(original, candidate, data, Metric("classifier", ["logits[:, :5]"]))
    assert set(sliced.compare(candidate).metric_parts) == {
        "logits[:, :5] top1",
        "logits[:, :5] cosine",
    }


def test_parse_metric_output() -> None:
    selector = parse_metric_output("output0[:,4:]=cells@0.05")
    assert selector.name == "output0" and selector.kind == "cells@0.05"
    assert selector.index == (slice(None), slice(4, None))
    assert parse_metric_output("logits").index is None
    assert parse_metric_output("y[..., 2]").index == (Ellipsis, 2)
    for bad in ("out[0]", "out[:,a]", "out=nope", "out[:]=classifier", "[:,1]"):
        with pytest.raises(UsageError):
            parse_metric_output(bad)
    for bad in ("cosin", "cells@x", "top0"):
        with pytest.raises(UsageError):
            check_kind(bad)
    assert check_kind("top3") == "top3"


def test_suggest_preset() -> None:
    assert suggest_preset([("output0", [1, 84, 8400], True)], False)[0] == "detector"  # type: ignore[index]
    encoder = suggest_preset([("last_hidden_state", ["b", "s", 384], True)], True)
    assert encoder is not None and encoder[0] == "encoder"
    assert suggest_preset([("logits", ["b", 1000], True)], False)[0] == "classifier"  # type: ignore[index]
    assert suggest_preset([("mask", ["b", 3, 64, 64], True)], False) is None


def test_cli_metric_options_and_recipe(tmp_path: Path, cli: CliRunner) -> None:
    model, data = _two_blocks(tmp_path)
    out = tmp_path / "out.onnx"
    result = cli(
        model, "--calib", data, "--sparsity", "0.5", "-o", out, "--metric-output",
        "out[:,4:]=cosine", "--metric-output", "out[:,:4]", "--metric", "standardized",
        "--min-score", "0.5", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert set(report["fidelity"]["metric_parts"]) == {
        "out[:,4:] cosine",
        "out[:,:4] standardized",
    }
    recipe = json.loads((tmp_path / "out.onnx.recipe.json").read_text())
    assert recipe["metric"] == "standardized"
    assert recipe["metric_outputs"] == ["out[:,4:]=cosine", "out[:,:4]"]
    replay = cli(model, "--calib", data, "--recipe", out.with_name("out.onnx.recipe.json"),
                 "-o", tmp_path / "replay.onnx", "--json")  # fmt: skip
    assert replay.code == 0, replay.err
    assert json.loads(replay.out)["fidelity"]["metric_parts"] == report["fidelity"]["metric_parts"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--metric-output", "nosuch"), "'nosuch' is not a model output"),
        (("--metric", "accuracy"), "unknown --metric 'accuracy'"),
        (("--metric-output", "out[:,:,3]"), "does not fit the output's shape"),
        (("--min-score", "1.5"), "--min-score must be in"),
    ],
)
def test_cli_bad_metric_is_one_line(
    tmp_path: Path, cli: CliRunner, args: tuple[str, ...], message: str
) -> None:
    model, data = _two_blocks(tmp_path)
    out = tmp_path / "out.onnx"
    result = cli(model, "--calib", data, "--sparsity", "0.5", "-o", out, *args)
    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not out.exists()


def test_feature_axis_is_never_a_dynamic_one() -> None:
    from onnxprune.metric import _layout

    assert _layout((2, 7, 4), {}, ["batch", "seq", 4]).feature_axis == 2
    assert _layout((2, 84, 100), {}, ["batch", 84, "anchors"]).feature_axis == 1
    assert _layout((2, 7, 5), {}, ["batch", "a", "b"]).feature_axis is None
    assert _layout((2, 7, 5), {}, None).feature_axis == 1
    tokens = {"input_ids": np.zeros((2, 7), np.int64)}
    layout = _layout((2, 7, 5), tokens, [2, 7, 5])
    assert layout.sequence and layout.feature_axis == 2


def test_sparsity_auto_searches_on_the_score(tmp_path: Path) -> None:
    """--sparsity auto with --min-score stops where the small block breaks; the cosine gate,
    blind to it, lets the search go much further."""
    model, data = _two_blocks(tmp_path)
    common = {"sparsity": "auto", "min_row_weights": 0, "update": False, "group": "row"}
    common["keep_on_fail"] = True
    by_cosine = prune(model, data, output=tmp_path / "a.onnx", min_cosine=0.999, **common)
    by_score = prune(model, data, output=tmp_path / "b.onnx", min_score=0.9, **common)
    assert by_score.fidelity is not None and by_score.fidelity.score is not None
    # The search measures on half of the held-out samples and reports on the other half: the
    # chosen point passed where it was searched; the reported score may land just below.
    chosen = [p for p in by_score.curve if p["sparsity"] == by_score.target_sparsity]
    assert chosen and all(p["passes"] for p in chosen)
    assert by_score.exit_code == (0 if by_score.fidelity.score >= 0.9 else 5)
    assert by_score.target_sparsity + 0.2 < by_cosine.target_sparsity
    assert all("score" in point for point in by_score.curve)


def test_inspect_scores_each_layer_and_suggests_a_preset(tmp_path: Path) -> None:
    from onnxprune.inspection import inspect_model

    model, data = _two_blocks(tmp_path)
    report = inspect_model(model, data, sparsity=0.9)
    (layer,) = report.layers
    assert layer.cosine_alone is not None and layer.score_alone is not None
    assert layer.cosine_alone > 0.999 and layer.score_alone < 0.9
    assert "score alone" in report.format_table()
    digits = inspect_model(Path(__file__).resolve().parent.parent / "examples/digits_mlp.onnx")
    assert digits.suggested_metric == "classifier"
    assert "suggested metric: --metric classifier" in digits.format_table()
