"""Structured removal (``--structured``): dependency groups, exact surgery, CLI behaviour.

The central check is differential: for every supported pattern, the *cut* model (tensors
really shrunk) must compute what the *masked* model computes (same units' reader columns set
to zero, same mean compensation in the readers' biases), within 1e-4 relative, in
onnxruntime. The masked model is produced by the same code path with ``cut=False``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from conftest import EXAMPLE_CALIB, EXAMPLE_CNN, CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ort_run import run_model

from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner
from onnxprune.structure import StructuredResult, round_kept
from onnxprune.structure.scores import keep_floor

# Both concatenated convs (concat_pair: conv_a [6], conv_b [4]) lose channels.
BOTH_BRANCHES = {"conv_a": "channels", "conv_b": "channels"}
# name -> (builder, feeds, {group name: expected kind} that must shrink)
CASES: dict[str, tuple[Callable[[], onnx.ModelProto], Callable[[int, int], dict], dict]] = {  # type: ignore[type-arg]
    "mlp_chain": (builders.mlp_matmul, None, {"fc0": "neurons", "fc1": "neurons"}),
    "gemm_chain": (builders.mlp_gemm, None, {"gemm0": "neurons", "gemm1": "neurons"}),
    "weights_behind_transpose_and_cast": (
        builders.viewed_weights,
        None,
        {"fc0": "neurons", "fc1": "neurons"},
    ),
    "conv_bn_depthwise_separable": (
        builders.cnn_bn,
        None,
        {"conv1": "channels", "pwconv": "channels"},
    ),
    "residual_block": (builders.residual_cnn, None, {"conv_a": "channels"}),
    "concat_branches": (builders.concat_cnn, None, BOTH_BRANCHES),
    "slice_of_a_concat": (builders.sliced_concat_cnn, None, BOTH_BRANCHES),
    "split_of_a_concat": (builders.split_cnn, None, BOTH_BRANCHES),
    "flatten_into_gemm": (builders.flatten_gemm_cnn, None, {"conv": "channels", "fc1": "neurons"}),
    "bert_encoder_layer": (
        builders.encoder_layer,
        builders.encoder_feeds,
        {"query": "heads", "intermediate": "neurons"},
    ),
}


def _feeds(model: onnx.ModelProto, maker: Callable | None, n: int, seed: int) -> dict:  # type: ignore[type-arg]
    return maker(n, seed) if maker is not None else builders.random_inputs(model, n, seed)


def _shrink(
    tmp_path: Path,
    model: onnx.ModelProto,
    feeds: dict,
    ratio: float,
    score: str,
    **extra: object,  # type: ignore[type-arg]
) -> tuple[StructuredResult, StructuredResult]:
    path = builders.save(model, tmp_path / "model.onnx")
    data = builders.write_npz(tmp_path / "calib.npz", feeds)
    config = PruneConfig(sparsity=0.0, structured=ratio, structured_score=score, **extra)  # type: ignore[arg-type]
    pruner = Pruner(path, data, config)
    return pruner.shrink(cut=True), pruner.shrink(cut=False)


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == 1)


@pytest.mark.parametrize("score", ["variance-uniform", "variance", "l1"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cut_model_equals_masked_model(tmp_path: Path, case: str, score: str) -> None:
    builder, feed_maker, expected = CASES[case]
    model = builder()
    cut, masked = _shrink(tmp_path, model, _feeds(model, feed_maker, 48, 0), 0.5, score)
    onnx.checker.check_model(cut.model, full_check=True)
    check = _feeds(model, feed_maker, 16, 1)
    for got, want in zip(run_model(cut.model, check), run_model(masked.model, check), strict=True):
        assert got.shape == want.shape
        scale = float(np.abs(want).max())
        assert float(np.abs(got - want).max()) <= 1e-4 * scale
    groups = {g.name: g for g in cut.groups}
    if score == "variance-uniform":  # every unfrozen group gives up its share
        for name, kind in expected.items():
            group = groups[name]
            assert not group.frozen, (name, group.frozen)
            assert group.kind == kind
            wanted = min(
                round(0.5 * group.units_before), group.units_before - keep_floor(group.units_before)
            )
            assert group.units_before - group.units_after == wanted
    assert _params(cut.model) < _params(model)
    assert sum(g.units_before - g.units_after for g in cut.groups) > 0


def test_dependency_groups_couple_what_must_go_together(tmp_path: Path) -> None:
    model = builders.residual_cnn()
    cut, _ = _shrink(tmp_path, model, builders.random_inputs(model, 32, 0), 0.5, "variance-uniform")
    groups = {g.name: g for g in cut.groups}
    stream = groups["conv_a"]  # conv_a and conv_c write the residual stream
    assert sorted(stream.writers) == ["conv_a", "conv_c"]
    assert sorted(stream.readers) == ["conv_b", "conv_d"]
    assert "conv_c" not in groups  # no separate group for a coupled writer
    dims = {t.name: list(t.dims) for t in cut.model.graph.initializer}
    kept = stream.units_after
    assert dims["conv_a_w"][0] == kept and dims["conv_c_w"][0] == kept
    assert dims["conv_b_w"][1] == kept and dims["conv_d_w"][1] == kept


def test_flatten_rows_and_attention_heads_follow_their_channels(tmp_path: Path) -> None:
    model = builders.flatten_gemm_cnn()
    cut, _ = _shrink(tmp_path, model, builders.random_inputs(model, 32, 0), 0.5, "variance-uniform")
    kept = {g.name: g.units_after for g in cut.groups}["conv"]
    dims = {t.name: list(t.dims) for t in cut.model.graph.initializer}
    assert dims["fc1_w"][0] == kept * 16  # each channel owns its 4x4 pooled positions
    assert dims["bn_scale"] == [kept] and dims["bn_var"] == [kept]

    encoder = builders.encoder_layer()
    cut, _ = _shrink(tmp_path, encoder, builders.encoder_feeds(32, 0), 0.5, "variance-uniform")
    heads = {g.name: g for g in cut.groups}["query"]
    assert heads.kind == "heads" and heads.units_before == 4 and heads.units_after == 2
    assert sorted(heads.writers) == ["key", "query", "value"]
    assert heads.readers == ["attn_out"]
    dims = {t.name: list(t.dims) for t in cut.model.graph.initializer}
    assert dims["query_w"] == [32, 16] and dims["attn_out_w"] == [16, 32]
    assert dims["heads_dims"] == [2] and dims["hidden_dim"] == [1]  # int64 constants
    values = {t.name: onnx.numpy_helper.to_array(t) for t in cut.model.graph.initializer}
    assert values["heads_dims"].tolist() == [2, 8] and values["hidden_dim"].tolist() == [16]


def test_slice_bounds_follow_the_channels_before_and_inside(tmp_path: Path) -> None:
    model = builders.sliced_concat_cnn()
    cut, _ = _shrink(tmp_path, model, builders.random_inputs(model, 32, 0), 0.5, "variance-uniform")
    kept = {g.name: g.units_after for g in cut.groups}
    values = {t.name: onnx.numpy_helper.to_array(t) for t in cut.model.graph.initializer}
    # conv_a's channels sit before the slice, conv_b's inside it
    assert values["starts"].tolist() == [kept["conv_a"]]
    assert values["ends"].tolist() == [10]  # reached the end before: still does (clamped)
    assert values["conv_c_w"].shape[1] == kept["conv_b"]

    chunked = builders.sliced_concat_cnn(chunk=True)
    cut, _ = _shrink(tmp_path, chunked, builders.random_inputs(chunked, 32, 0), 0.5, "variance")
    groups = {g.name: g for g in cut.groups}
    assert any("straddle the Slice" in r for r in groups["conv_a"].frozen)
    assert groups["conv_a"].units_after == 6


def test_two_groups_shrink_one_split_sizes_constant(tmp_path: Path) -> None:
    model = builders.split_cnn()
    cut, _ = _shrink(tmp_path, model, builders.random_inputs(model, 32, 0), 0.5, "variance-uniform")
    kept = {g.name: g.units_after for g in cut.groups}
    values = {t.name: onnx.numpy_helper.to_array(t) for t in cut.model.graph.initializer}
    assert values["sizes"].tolist() == [kept["conv_a"], kept["conv_b"]] == [3, 2]


def test_same_inputs_give_the_same_shrunk_model(cli: CliRunner, tmp_path: Path) -> None:
    outputs = []
    for name in ("one.onnx", "two.onnx"):
        done = cli(
            EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--structured", 0.4, "-o", tmp_path / name, "-q"
        )
        assert done.code == 0, done.err
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]


def test_groups_freeze_with_a_reason(tmp_path: Path) -> None:
    model = builders.transformer_block()  # single head: q.k contracts the channels
    cut, _ = _shrink(tmp_path, model, builders.random_inputs(model, 32, 0), 0.5, "variance")
    groups = {g.name: g for g in cut.groups}
    assert any("contracts over the channel axis" in r for r in groups["q"].frozen)
    assert any("LayerNormalization" in r for r in groups["o"].frozen)
    assert all(g.units_after == g.units_before for g in cut.groups if g.frozen)
    assert not groups["ffn1"].frozen and groups["ffn1"].units_after < 64

    cut, _ = _shrink(
        tmp_path, model, builders.random_inputs(model, 32, 0), 0.5, "variance", exclude=("ffn2",)
    )
    ffn = {g.name: g for g in cut.groups}["ffn1"]
    assert ffn.units_after == ffn.units_before
    assert any("--exclude" in r for r in ffn.frozen)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    widths=st.lists(st.integers(2, 24), min_size=1, max_size=3),
    ratio=st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9]),
    matmul=st.booleans(),
    score=st.sampled_from(["l1", "variance"]),
)
def test_random_chains_lose_exactly_the_requested_units(
    tmp_path_factory: pytest.TempPathFactory,
    widths: list[int],
    ratio: float,
    matmul: bool,
    score: str,
) -> None:
    sizes = (6, *widths, 3)
    model = (builders.mlp_matmul if matmul else builders.mlp_gemm)(sizes)
    tmp = tmp_path_factory.mktemp("chain")
    cut, _ = _shrink(tmp, model, builders.random_inputs(model, 24, 0), ratio, score)
    hidden = [g for g in cut.groups if not g.frozen]
    assert [g.units_before for g in hidden] == widths
    removed = [g.units_before - g.units_after for g in hidden]
    capacity = [w - keep_floor(w) for w in widths]
    if score == "l1":  # the same share of every layer
        assert removed == [min(round(ratio * w), c) for w, c in zip(widths, capacity, strict=True)]
    else:  # one global budget over all units
        assert sum(removed) == min(round(ratio * sum(widths)), sum(capacity))
    assert all(0 <= r <= c for r, c in zip(removed, capacity, strict=True))
    out = run_model(cut.model, builders.random_inputs(model, 4, 1))[0]
    assert out.shape == (4, 3) and np.isfinite(out).all()


def test_cli_structured_shrinks_the_example(cli: CliRunner, tmp_path: Path) -> None:
    before = EXAMPLE_CNN.read_bytes()
    out = tmp_path / "small.onnx"
    done = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--structured", 0.3, "-o", out, "--json")
    assert done.code == 0, done.err
    report = json.loads(done.out)
    assert EXAMPLE_CNN.read_bytes() == before
    assert out.stat().st_size < 0.9 * len(before)
    assert report["params_total"] < report["params_before"]
    groups = {g["name"]: g for g in report["structured"]}
    assert sum(g["units_before"] - g["units_after"] for g in groups.values()) > 0
    frozen = [g for g in groups.values() if g["frozen"]]
    assert frozen and all(g["units_after"] == g["units_before"] for g in frozen)
    assert report["fidelity"]["outputs"][0]["cosine"] > 0.9
    shrunk = onnx.load(out)
    onnx.checker.check_model(shrunk, full_check=True)


def test_cli_structured_then_sparsity(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "both.onnx"
    done = cli(
        EXAMPLE_CNN,
        "--calib",
        EXAMPLE_CALIB,
        "--structured",
        0.3,
        "--sparsity",
        0.5,
        "-o",
        out,
        "--json",
    )
    assert done.code == 0, done.err
    report = json.loads(done.out)
    assert report["params_total"] < report["params_before"]
    assert abs(report["achieved_sparsity"] - 0.5) < 0.01
    # the weight pruning ran on the shrunk model: its layers have the shrunk shapes
    shapes = {layer["name"]: layer["shape"] for layer in report["layers"]}
    shrunk = {t.name: list(t.dims) for t in onnx.load(out).graph.initializer}
    assert all(shape in shrunk.values() for shape in shapes.values())
    assert report["fidelity"]["source"] == "held-out"


@pytest.mark.parametrize("value", ["1.0", "-0.1", "abc"])
def test_cli_structured_rejects_impossible_ratios(
    cli: CliRunner, tmp_path: Path, value: str
) -> None:
    out = tmp_path / "bad.onnx"
    done = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--structured", value, "-o", out)
    assert done.code == 2
    assert "--structured" in done.err and "Traceback" not in done.err
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (("--structured", 0.3), "--structured is not supported"),
        (("--sparsity", 0.5, "--sequential"), "--sequential is not supported"),
        (("--sparsity", 0.5, "--layer", "fc1=0.3"), "--layer sparsity overrides is not"),
        (
            ("--sparsity", 0.5, "--allocation", "sensitivity"),
            "--allocation sensitivity is not supported",
        ),
    ],
)
def test_whole_model_options_refuse_big_model_mode_cleanly(
    cli: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: tuple[object, ...],
    named: str,
) -> None:
    import onnxprune.io

    monkeypatch.setattr(onnxprune.io, "BIG_MODEL_BYTES", 0)  # every model is "big"
    out = tmp_path / "big.onnx"
    done = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, *options, "-o", out)
    assert done.code == 2
    assert named in done.err and "Traceback" not in done.err
    assert len(done.err.strip().splitlines()) == 1
    assert not out.exists()


# -- --structured-multiple: kept widths rounded for int8 / fp16 kernels -----------------------


@settings(max_examples=200, deadline=None)
@given(
    units=st.integers(2, 200),
    data=st.data(),
    multiple=st.sampled_from([2, 4, 8, 16, 32]),
    block=st.sampled_from([1, 2, 3, 8, 24, 64]),
)
def test_round_kept_gives_a_multiple_near_the_asked_width(
    units: int, data: st.DataObject, multiple: int, block: int
) -> None:
    rng = np.random.default_rng(units)
    scores = rng.random(units)
    count = data.draw(st.integers(0, units - keep_floor(units)))
    removed = np.sort(rng.choice(units, count, replace=False)).astype(np.int64)
    rounded = round_kept(removed, scores, multiple, block)
    kept = units - len(rounded)
    step = multiple // math.gcd(multiple, block)
    assert kept == units or (kept * block) % multiple == 0
    assert kept >= keep_floor(units)
    if kept != units and kept >= step * math.ceil(keep_floor(units) / step) + step:
        # Not forced up by the floor: the nearest allowed width.
        assert abs(kept - (units - count)) <= step / 2
    old, new = set(removed.tolist()), set(rounded.tolist())
    assert old <= new or new <= old  # units only move one way
    if new - old:  # the extra removals are the lowest-scoring units that were kept
        assert max(scores[list(new - old)]) <= min(scores[sorted(set(range(units)) - new)])
    if old - new:  # the restored ones are the highest-scoring removed ones
        assert min(scores[list(old - new)]) >= max(scores[list(new)], default=-1.0)


def test_structured_multiple_rounds_neurons_and_leaves_heads(tmp_path: Path) -> None:
    """Encoder layer, 4 heads of 8 dims and 100 FFN neurons: the FFN keeps a multiple of 8
    neurons; a head is 8 channels, so any head count is already a multiple of 8. The cut model
    still computes exactly what the masked one does."""
    model = builders.encoder_layer(hidden=32, heads=4, ffn=100)
    feeds = builders.encoder_feeds(48, 0)
    plain, _ = _shrink(tmp_path, model, feeds, 0.3, "variance")
    cut, masked = _shrink(tmp_path, model, feeds, 0.3, "variance", structured_multiple=8)
    groups = {g.name: g for g in cut.groups}
    plain_groups = {g.name: g for g in plain.groups}
    assert plain_groups["intermediate"].units_after % 8 != 0  # the rounding has work to do
    assert groups["intermediate"].units_after % 8 == 0
    assert abs(groups["intermediate"].units_after - plain_groups["intermediate"].units_after) <= 4
    assert groups["query"].units_after == plain_groups["query"].units_after
    check = builders.encoder_feeds(16, 1)
    for got, want in zip(run_model(cut.model, check), run_model(masked.model, check), strict=True):
        assert float(np.abs(got - want).max()) <= 1e-4 * float(np.abs(want).max())


def test_cli_structured_multiple_is_checked_recorded_and_replayed(
    cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "m8.onnx"
    done = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--structured", 0.3,
               "--structured-multiple", 8, "-o", out, "--json")  # fmt: skip
    assert done.code == 0, done.err
    groups = {g["name"]: g for g in json.loads(done.out)["structured"]}
    assert all(g["units_after"] % 8 == 0 for g in groups.values() if not g["frozen"])
    recipe = Path(str(out) + ".recipe.json")
    data = json.loads(recipe.read_text())
    assert data["structured_multiple"] == 8
    replayed = tmp_path / "replayed.onnx"
    assert (
        cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--recipe", recipe, "-o", replayed, "-q").code
        == 0
    )
    assert replayed.read_bytes() == out.read_bytes()
    # A recipe written before the option existed replays without rounding.
    del data["structured_multiple"]
    older = tmp_path / "older.recipe.json"
    older.write_text(json.dumps(data))
    plain = tmp_path / "plain.onnx"
    assert cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--structured", 0.3,
               "--structured-multiple", 1, "-o", plain, "-q").code == 0  # fmt: skip
    again = tmp_path / "again.onnx"
    assert (
        cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--recipe", older, "-o", again, "-q").code == 0
    )
    assert again.read_bytes() == plain.read_bytes() != out.read_bytes()
    for args, message in (
        (("--sparsity", 0.5, "--structured-multiple", 8), "--structured-multiple needs"),
        (("--structured", 0.3, "--structured-multiple", 0), "--structured-multiple must be in"),
    ):
        bad = tmp_path / "bad.onnx"
        done = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, *args, "-o", bad)
        assert done.code == 2 and message in done.err, done.err
        assert len(done.err.strip().splitlines()) == 1 and not bad.exists()
