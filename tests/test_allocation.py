"""Sensitivity-driven allocation (``--allocation sensitivity``): the pure solver, and the
pipeline end to end on a model whose layers differ in how much their pruning hurts."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from conftest import CliRunner, run_and_report
from hypothesis import given
from hypothesis import strategies as st
from onnx.numpy_helper import to_array
from ort_run import run_model

from onnxprune.allocation import (
    JUDGING_PASSES,
    MIN_JUDGED_RUNS,
    SensitivityCurve,
    _lower_hull,
    allocate_by_sensitivity,
    interpolated_curve,
    judging_budget_runs,
    probe_levels,
    smallest_layers,
    within_judging_budget,
)
from onnxprune.config import PruneConfig
from onnxprune.errors import EXIT_USAGE
from onnxprune.pipeline import Pruner
from onnxprune.scoring import get_method

# -- the solver ---------------------------------------------------------------------------


def test_probe_levels_bracket_the_share_within_the_cap() -> None:
    assert probe_levels(0.5, 1.0) == [0.3, 0.4, 0.5, 0.6, 0.7]
    # Near the cap the upper levels go only half the way to it.
    assert probe_levels(0.9, 0.98) == [0.7, 0.8, 0.9, 0.92, 0.94]
    assert probe_levels(0.15, 1.0)[0] == 0.0
    assert probe_levels(0.0, 1.0) == [], "a layer kept dense is not measured"
    assert probe_levels(0.5, 0.5) == [0.3, 0.4, 0.5], "a layer at its cap only goes down"


LEVELS = [0.3, 0.4, 0.5, 0.6, 0.7]
ERRORS = [1.0, 2.0, 4.0, 8.0, 16.0]  # the local error doubles per level


def test_the_curve_follows_the_error_with_the_power_fitted_through_both_judged_points() -> None:
    # E grows 4x from the base (0.5) to the top (0.7) and the damage 16x: gamma = 2.
    curve = interpolated_curve(LEVELS, ERRORS, 2, {2: 0.01, 4: 0.16})
    expected = [0.01 * (e / 4.0) ** 2 for e in ERRORS]
    assert [level for level, _ in curve] == LEVELS
    assert np.allclose([damage for _, damage in curve], expected)
    assert curve[2][1] == 0.01 and curve[4][1] == 0.16  # judged points are kept exactly


def test_the_fitted_power_is_clamped_and_one_judged_point_scales_linearly() -> None:
    # 10^7 x the damage for 4x the error would be gamma ~ 11.6: clamped at 10.
    steep = interpolated_curve(LEVELS, ERRORS, 2, {2: 1e-9, 4: 1e-2})
    assert np.isclose(steep[3][1], 1e-9 * 2.0**10, rtol=1e-9, atol=0)
    alone = interpolated_curve(LEVELS, ERRORS, 2, {2: 0.01})
    assert np.allclose([d for _, d in alone], [0.01 * e / 4.0 for e in ERRORS])


def test_nothing_seen_at_the_base_share_scales_from_the_top_level() -> None:
    curve = interpolated_curve(LEVELS, ERRORS, 2, {2: 0.0, 4: 0.08})
    assert curve[2][1] == 0.0  # measured
    assert np.isclose(curve[3][1], 0.08 * 8.0 / 16.0) and np.isclose(curve[0][1], 0.08 / 16.0)


def test_hull_ignores_noise_that_makes_pruning_more_look_better() -> None:
    points = [(0.3, 0.02), (0.4, 0.01), (0.5, 0.05), (0.6, 0.30)]
    hull = _lower_hull(points)
    ys = [y for _, y in hull]
    assert ys == sorted(ys), "damage never falls as sparsity rises"
    slopes = [(y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in itertools.pairwise(hull)]
    assert slopes == sorted(slopes), "convex"


def test_budget_moves_from_the_sensitive_layer_to_the_tolerant_one() -> None:
    levels = (0.3, 0.4, 0.5, 0.6, 0.7)
    steep = SensitivityCurve(1000, tuple((s, 10 * s**2) for s in levels))
    flat = SensitivityCurve(1000, tuple((s, 0.1 * s**2) for s in levels))
    sparsity = allocate_by_sensitivity([steep, flat], 0.5 * 2000)
    assert sparsity == pytest.approx([0.3, 0.7])


def test_weights_per_unit_of_damage_decide_not_sparsity() -> None:
    # The same damage curve over sparsity, but the big layer frees 10x the weights per step:
    # it gives up more.
    levels = (0.3, 0.4, 0.5, 0.6, 0.7)
    small = SensitivityCurve(100, tuple((s, s**2) for s in levels))
    big = SensitivityCurve(1000, tuple((s, s**2) for s in levels))
    sparsity = allocate_by_sensitivity([small, big], 0.5 * 1100)
    assert sparsity[1] > 0.5 > sparsity[0]


@given(
    st.lists(
        st.tuples(
            st.integers(1, 5000),
            st.floats(0.05, 0.9),
            st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_the_budget_is_spent_exactly_within_every_curve(
    layers: list[tuple[int, float, list[float]]],
) -> None:
    curves, budget = [], 0.0
    for size, base, damages in layers:
        levels = probe_levels(base, 1.0)
        curves.append(SensitivityCurve(size, tuple(zip(levels, damages, strict=False))))
        budget += size * base
    sparsity = allocate_by_sensitivity(curves, budget)
    assert sum(c.size * s for c, s in zip(curves, sparsity, strict=True)) == pytest.approx(
        budget, rel=1e-9, abs=1e-6
    )
    for curve, s in zip(curves, sparsity, strict=True):
        assert curve.points[0][0] - 1e-12 <= s <= curve.points[-1][0] + 1e-12


def test_a_curve_without_points_stays_dense() -> None:
    curve = SensitivityCurve(500, ((0.3, 0.0), (0.5, 0.1), (0.6, 0.2)))
    assert allocate_by_sensitivity([SensitivityCurve(64, ()), curve], 0.5 * 500) == [0.0, 0.5]


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=30), st.floats(0.0, 0.2))
def test_the_unmeasured_layers_are_the_smallest_within_the_share(
    sizes: list[int], share: float
) -> None:
    chosen = smallest_layers(sizes, share)
    assert sum(sizes[k] for k in chosen) <= share * sum(sizes)
    rest = [sizes[k] for k in range(len(sizes)) if k not in chosen]
    if chosen and rest:
        assert max(sizes[k] for k in chosen) <= min(rest)
    if rest:  # no room for one more: the smallest of the rest would pass the share
        assert sum(sizes[k] for k in chosen) + min(rest) > share * sum(sizes)


@given(
    st.lists(st.tuples(st.integers(1, 10_000), st.floats(0.01, 2.0)), min_size=1, max_size=30),
    st.floats(0.0, 20.0),
)
def test_the_judged_layers_fit_the_budget_best_value_first(
    layers: list[tuple[int, float]], budget: float
) -> None:
    sizes, costs = [size for size, _ in layers], [cost for _, cost in layers]
    chosen = within_judging_budget(sizes, costs, budget)
    spent = sum(costs[k] for k in chosen)
    assert spent <= budget + 1e-9
    # Nothing left out would still fit: the greedy pass skipped it for lack of room.
    assert all(spent + costs[k] > budget for k in range(len(sizes)) if k not in chosen)
    best = max(range(len(sizes)), key=lambda k: (sizes[k] / costs[k], -k))
    assert (best in chosen) == (costs[best] <= budget)
    if sum(costs) <= budget:
        assert chosen == set(range(len(sizes)))


def test_the_judging_budget_is_two_passes_or_a_floor_of_runs() -> None:
    """In runs of the whole model over the probe samples: two passes over the calibration
    samples (128 samples judged on 4: 64 runs), never fewer than MIN_JUDGED_RUNS (16 samples
    judged on 9 would give 3.6)."""
    assert judging_budget_runs(128, 4) == pytest.approx(JUDGING_PASSES * 32)
    assert judging_budget_runs(16, 9) == MIN_JUDGED_RUNS
    assert judging_budget_runs(64, 16) == max(JUDGING_PASSES * 4, MIN_JUDGED_RUNS)


def test_the_cheapest_weights_are_judged_first() -> None:
    # Equal sizes: the layers with the smallest suffix (the last ones) go first; a large
    # layer with a costly suffix is worth its cost.
    sizes, costs = [100, 100, 100, 1000], [2.0, 1.0, 0.5, 2.0]
    assert within_judging_budget(sizes, costs, 2.5) == {3, 2}
    assert within_judging_budget(sizes, costs, 1.6) == {2, 1}
    assert within_judging_budget(sizes, costs, 0.0) == set()


# -- the pipeline -------------------------------------------------------------------------


def _prepare(tmp_path: Path) -> tuple[onnx.ModelProto, Path, Path]:
    model = builders.quiet_branch()
    path, calib = builders.save_with_calibration(model, tmp_path, 128)
    return model, path, calib


def _error(model: onnx.ModelProto, pruned: Path, original: Path) -> float:
    feed = builders.random_inputs(model, 256, seed=9)
    (dense,) = run_model(original, feed)
    (ours,) = run_model(pruned, feed)
    return float(np.linalg.norm(ours - dense) / np.linalg.norm(dense))


@pytest.mark.parametrize(("allocation", "judged"), [("sensitivity", 4), ("measured", 10)])
@pytest.mark.parametrize(
    ("method", "extra"), [("contrib", ["--group", "layer"]), ("sparsegpt", []), ("wanda", [])]
)
def test_sensitivity_spends_the_budget_on_the_quiet_layer(
    cli: CliRunner, tmp_path: Path, method: str, extra: list[str], allocation: str, judged: int
) -> None:
    """Both the estimated curves (two judged candidates per layer) and the measured ones (5 per
    layer) move the budget to the branch whose damage is 100x smaller, by the same amount."""
    model, path, calib = _prepare(tmp_path)
    common = ["--sparsity", 0.5, "--method", method, *extra]
    uniform = run_and_report(
        cli, path, calib, tmp_path / "uniform.onnx", *common, "--allocation", "group"
    )
    sensitive = run_and_report(
        cli, path, calib, tmp_path / "sens.onnx", *common, "--allocation", allocation
    )
    share = {layer["weight"]: layer["sparsity"] for layer in sensitive["layers"]}
    # B's damage is 100x smaller: it goes to its highest level, A gives what keeps the total.
    highest = probe_levels(0.5, 1 - 8 / 64)[-1]  # K = 64, --min-row-weights 8
    assert share == pytest.approx({"A": 1 - highest, "B": highest}, abs=1 / 1024)
    assert sensitive["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert sensitive["sensitivity_builds"] == judged  # per layer: 2 estimated, 5 measured
    assert uniform["sensitivity_builds"] == 0
    # Differential: the re-allocated model is closer to the original on fresh inputs.
    assert _error(model, tmp_path / "sens.onnx", path) < _error(
        model, tmp_path / "uniform.onnx", path
    )


def test_auto_keeps_the_reallocated_candidate_only_when_it_scores_at_least_as_well(
    cli: CliRunner, tmp_path: Path
) -> None:
    _, path, calib = _prepare(tmp_path)
    report = run_and_report(
        cli,
        path,
        calib,
        tmp_path / "out.onnx",
        *("--sparsity", 0.5, "--allocation", "sensitivity"),
    )
    trials = report["group_trials"]
    refined = [name for name in trials if name.endswith("+sensitivity")]
    assert len(refined) == 1, trials
    best_plain = max(v for k, v in trials.items() if not k.endswith("+sensitivity"))
    kept_refined = report["sensitivity_builds"] > 0 and trials[refined[0]] >= best_plain
    share = {layer["weight"]: layer["sparsity"] for layer in report["layers"]}
    if kept_refined:
        assert share["B"] > share["A"]
    assert report["arguments"]["allocation"] == "sensitivity"


def test_thorough_also_tries_the_methods_variant_in_the_winning_group(
    cli: CliRunner, tmp_path: Path
) -> None:
    """The default --group auto tries the method in each group; --thorough also tries its
    registered variant (contrib-nocomp) in the winning group, on the same samples: the same
    trials score the same, and the variant is one more."""
    _, path, calib = _prepare(tmp_path)
    default = run_and_report(cli, path, calib, tmp_path / "default.onnx", "--sparsity", 0.5)
    plain = {k: v for k, v in default["group_trials"].items() if not k.endswith("+sensitivity")}
    assert set(plain) == {"contrib/row", "contrib/global"}
    thorough = run_and_report(
        cli, path, calib, tmp_path / "thorough.onnx", "--sparsity", 0.5, "--thorough"
    )
    tried = thorough["group_trials"]
    winner_group = max(plain, key=lambda name: plain[name]).split("/")[1]
    assert [k for k in tried if k.startswith("contrib-nocomp/")] == [
        f"contrib-nocomp/{winner_group}"
    ]
    for name, score in plain.items():
        assert tried[name] == pytest.approx(score, abs=1e-9)
    assert thorough["arguments"]["thorough"] is True
    assert not any("--thorough" in w for w in thorough["warnings"])


def test_thorough_where_it_changes_nothing_says_so(cli: CliRunner, tmp_path: Path) -> None:
    """wanda's row selection and group allocation have no trials and no budget to lift: the
    run says --thorough changed nothing and writes what the run without it writes."""
    _, path, calib = _prepare(tmp_path)
    args = ("--sparsity", 0.5, "--method", "wanda")
    plain = run_and_report(cli, path, calib, tmp_path / "plain.onnx", *args)
    report = run_and_report(cli, path, calib, tmp_path / "thorough.onnx", *args, "--thorough")
    assert [w for w in report["warnings"] if "--thorough" in w] == [
        "--thorough changes nothing here: it adds --group auto's variant trials and lifts "
        "--allocation sensitivity's judging budget, and this run uses neither"
    ]
    assert not any("--thorough" in w for w in plain["warnings"])
    for written, wanted in zip(
        onnx.load(str(tmp_path / "thorough.onnx")).graph.initializer,
        onnx.load(str(tmp_path / "plain.onnx")).graph.initializer,
        strict=True,
    ):
        np.testing.assert_array_equal(to_array(written), to_array(wanted))


def test_sensitivity_replays_from_the_recipe_byte_identically(
    cli: CliRunner, tmp_path: Path
) -> None:
    _, path, calib = _prepare(tmp_path)
    first = tmp_path / "first.onnx"
    run_and_report(
        cli, path, calib, first, "--sparsity", 0.6, "--allocation", "sensitivity", "--update"
    )
    again = tmp_path / "again.onnx"
    run_and_report(cli, path, calib, again, "--recipe", f"{first}.recipe.json")
    assert first.read_bytes() == again.read_bytes()


def test_sensitivity_with_sequential_keeps_the_measured_shares(
    cli: CliRunner, tmp_path: Path
) -> None:
    _, path, calib = _prepare(tmp_path)
    args = ("--sparsity", 0.5, "--group", "layer", "--allocation", "sensitivity")
    one_shot = run_and_report(cli, path, calib, tmp_path / "a.onnx", *args)
    staged = run_and_report(cli, path, calib, tmp_path / "b.onnx", *args, "--sequential")
    assert [layer["sparsity"] for layer in staged["layers"]] == [
        layer["sparsity"] for layer in one_shot["layers"]
    ]


def test_sensitivity_refuses_an_nm_pattern_in_one_line(cli: CliRunner, tmp_path: Path) -> None:
    _, path, calib = _prepare(tmp_path)
    out = tmp_path / "out.onnx"
    result = cli(
        path, "--calib", calib, "-o", out, "--pattern", "2:4", "--allocation", "sensitivity"
    )
    assert result.code == EXIT_USAGE
    assert "--allocation sensitivity cannot be combined with --pattern 2:4" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not out.exists()


# The stated tolerance between estimated and measured allocations: each layer's sparsity
# within 0.1 (one level step).
ESTIMATE_TOLERANCE = 0.1


@pytest.mark.parametrize("method", ["contrib", "wanda", "sparsegpt"])
@pytest.mark.parametrize("build", [builders.mlp_matmul, builders.cnn_bn], ids=["mlp", "cnn"])
def test_estimated_curves_allocate_like_the_measured_ones(
    tmp_path: Path, method: str, build: Callable[..., onnx.ModelProto]
) -> None:
    """The cheap curves (two judged candidates per layer on 16 samples, the other levels
    interpolated along the local error proxy) give the per-layer sparsities the 5-level
    measurement on 64 samples gives, within ESTIMATE_TOLERANCE, for every selection group."""
    model = build(seed=3)
    path, calib = builders.save_with_calibration(model, tmp_path, 96)
    scorer = get_method(method)
    groups = ["row"] if scorer.adaptive_mask else ["row", "global"]
    targets: dict[str, dict[str, list[float]]] = {}
    judged: dict[str, int] = {}
    for allocation in ("sensitivity", "measured"):
        config = PruneConfig(sparsity=0.6, method=method, allocation=allocation)
        pruner = Pruner(path, calib, config)
        chosen = list(range(len(pruner.layers)))
        targets[allocation] = {
            group: pruner.sensitivity_targets(config, chosen, 0.6, scorer, group)
            for group in groups
        }
        judged[allocation] = pruner.sensitivity_builds
    # Every measured layer: at most two judged candidates instead of one per level (up to 5).
    assert 0 < judged["sensitivity"] < judged["measured"]
    for group in groups:
        np.testing.assert_allclose(
            targets["sensitivity"][group], targets["measured"][group], atol=ESTIMATE_TOLERANCE
        )


class _Forgetful(dict):  # type: ignore[type-arg]
    """A ``_known_masks`` that keeps nothing: every judged candidate selects its mask again."""

    def __setitem__(self, key: object, value: object) -> None:
        pass


@pytest.mark.parametrize("build", [builders.mlp_matmul, builders.cnn_bn], ids=["mlp", "cnn"])
def test_judged_levels_reuse_the_curves_masks_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, build: Callable[..., onnx.ModelProto]
) -> None:
    """An estimated curve's judged candidates take the masks the curve selected for its local
    errors instead of selecting them again (except at a level above the layer's row-floor
    cap, which the candidate lowers): the curves are the same either way."""
    from onnxprune.pipeline import decisions

    path, calib = builders.save_with_calibration(build(seed=3), tmp_path, 96)
    selections: list[int] = []
    real = decisions.select_masks

    def counted(scores: list[np.ndarray], *args: object) -> list[np.ndarray]:
        selections.append(len(scores))
        return real(scores, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(decisions, "select_masks", counted)
    curves, single = {}, {}
    for reuse in (True, False):
        config = PruneConfig(sparsity=0.6, allocation="sensitivity")
        pruner = Pruner(path, calib, config)
        if not reuse:
            pruner._known_masks = _Forgetful()
        chosen = list(range(len(pruner.layers)))
        selections.clear()
        curves[reuse] = [
            pruner.sensitivity_curves(config, chosen, [0.6] * len(chosen), pruner.scorer, group)
            for group in ("row", "global")
        ]
        assert pruner.sensitivity_builds > 0
        assert not pruner._known_masks
        single[reuse] = selections.count(1)
    assert curves[True] == curves[False]
    assert single[True] < single[False]


def test_the_smallest_layer_is_kept_dense_unmeasured_and_measured_on_request(
    cli: CliRunner, tmp_path: Path
) -> None:
    """Estimated curves do not measure layers holding together at most UNMEASURED_SHARE of
    the weights: the first layer here (16 x 4, 0.1% of them) stays dense, unchanged in the
    written model, and the others take its share of the budget; --allocation measured still
    measures it."""
    model = builders.mlp_matmul(sizes=(16, 4, 256, 256, 4), seed=2)
    path, calib = builders.save_with_calibration(model, tmp_path, 96)
    args = ("--sparsity", 0.6, "--group", "layer")
    out = tmp_path / "estimated.onnx"
    estimated = run_and_report(cli, path, calib, out, *args, "--allocation", "sensitivity")
    first = estimated["layers"][0]
    assert estimated["unmeasured_layers"] == [first["name"]]
    assert first["sparsity"] == 0.0
    weight = first["weight"]
    np.testing.assert_array_equal(
        builders.stored_weights(out)[weight], builders.stored_weights(path)[weight]
    )
    assert estimated["achieved_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert 0 < estimated["sensitivity_builds"] <= 6  # at most two for each measured layer
    text = cli(path, "--calib", calib, "-o", tmp_path / "again.onnx", *args)
    assert "1 smallest layer not measured, kept dense" in text.out
    curves = {}
    for allocation in ("sensitivity", "measured"):
        config = PruneConfig(sparsity=0.6, method="contrib", allocation=allocation)
        pruner = Pruner(path, calib, config)
        curves[allocation] = pruner.sensitivity_curves(
            config, [0, 1, 2], [0.3, 0.6, 0.6], get_method("contrib"), "layer"
        )
        assert pruner.unmeasured_layers == ([first["name"]] if allocation == "sensitivity" else [])
    assert curves["sensitivity"][0].points == ()
    assert len(curves["measured"][0].points) >= 3
    assert all(curve.points for curve in curves["sensitivity"][1:])


def test_suffix_run_shares_follow_the_multiply_adds_downstream(tmp_path: Path) -> None:
    """Judging a layer alone runs its suffix session (its window's cut): the first layers'
    window runs the whole model, later ones only the layers after them, in proportion to
    their multiply-adds (size x input positions counted, the same for every layer of an
    MLP)."""
    sizes = (16, 48, 48, 48, 48, 48, 48, 48, 48, 4)
    model = builders.mlp_matmul(sizes=sizes, seed=4)
    path, calib = builders.save_with_calibration(model, tmp_path, 64)
    pruner = Pruner(path, calib, PruneConfig(sparsity=0.5, method="contrib"))
    chosen = list(range(len(pruner.layers)))
    shares = pruner.suffix_run_shares(chosen)
    macs = [a * b for a, b in itertools.pairwise(sizes)]
    assert shares[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(shares))
    for i, window in ((i, pruner._windows[i]) for i in chosen):
        start = window[0]  # a window's session starts at its first layer
        assert shares[i] == pytest.approx(sum(macs[start:]) / sum(macs))
    assert shares[-1] < 0.5 * shares[0]


def test_layers_past_the_judging_budget_keep_their_share(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for fewer judged runs than the layers need, the layers with the most
    weights per run of their suffix are measured and the others keep the share the selection
    group gives them (as in an --allocation group run), unmeasured; the overall budget is
    still met and the report names them. With room for all, none is left out."""
    model = builders.mlp_matmul(sizes=(16, 64, 64, 64, 64, 8), seed=3)
    path, calib = builders.save_with_calibration(model, tmp_path, 96)
    args = ("--sparsity", 0.6, "--group", "layer", "--allocation", "sensitivity")
    full = run_and_report(cli, path, calib, tmp_path / "full.onnx", *args)
    assert full["base_share_layers"] == []
    monkeypatch.setattr("onnxprune.allocation.JUDGING_PASSES", 0.05)
    monkeypatch.setattr("onnxprune.allocation.MIN_JUDGED_RUNS", 0.0)
    out = tmp_path / "budget.onnx"
    report = run_and_report(cli, path, calib, out, *args)
    at_share = set(report["base_share_layers"])
    assert at_share and at_share.isdisjoint(report["unmeasured_layers"])
    by_name = {layer["name"]: layer for layer in report["layers"]}
    measured = set(by_name) - at_share - set(report["unmeasured_layers"])
    assert measured, "some layer is measured"
    assert report["layers"][0]["name"] in at_share, "the whole model runs below the first"
    assert 0 < report["sensitivity_builds"] <= 2 * len(measured) < full["sensitivity_builds"]
    args_group = ("--sparsity", 0.6, "--group", "layer", "--allocation", "group")
    group = run_and_report(cli, path, calib, tmp_path / "group.onnx", *args_group)
    share = {layer["name"]: layer["sparsity"] for layer in group["layers"]}
    for name in at_share:
        assert by_name[name]["sparsity"] == pytest.approx(share[name], abs=1e-6)
    assert report["achieved_sparsity"] == pytest.approx(0.6, abs=1e-3)
    text = cli(path, "--calib", calib, "-o", tmp_path / "again.onnx", *args)
    plural = "s" if len(at_share) > 1 else ""
    expected = f"{len(at_share)} layer{plural} past the judging budget kept at the group's share"
    assert expected in text.out
    # --thorough lifts the budget: every layer is measured, as when the budget had room.
    lifted = tmp_path / "thorough.onnx"
    thorough = run_and_report(cli, path, calib, lifted, *args, "--thorough")
    assert thorough["base_share_layers"] == []
    assert thorough["sensitivity_builds"] == full["sensitivity_builds"]
    for written, wanted in zip(
        onnx.load(str(lifted)).graph.initializer,
        onnx.load(str(tmp_path / "full.onnx")).graph.initializer,
        strict=True,
    ):
        assert written.name == wanted.name
        np.testing.assert_array_equal(to_array(written), to_array(wanted))
