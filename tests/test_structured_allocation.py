"""--structured-allocation: how the removed share of units is spread over the groups."""

from __future__ import annotations

import json
from pathlib import Path

import builders
import numpy as np
from conftest import EXAMPLE_CALIB, EXAMPLE_CNN, CliRunner
from ort_run import run_model

from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner
from onnxprune.structure import StructuredResult


def _shrink(tmp_path: Path, cut: bool = True, **options: object) -> StructuredResult:
    model = builders.encoder_layer(hidden=32, heads=4, ffn=100)
    path = builders.save(model, tmp_path / "encoder.onnx")
    data = builders.write_npz(tmp_path / "calib.npz", builders.encoder_feeds(48, 0))
    config = PruneConfig(sparsity=0.0, structured=0.5, **options)  # type: ignore[arg-type]
    return Pruner(path, data, config).shrink(cut=cut)


def _units(result: StructuredResult) -> dict[str, tuple[str, int, int]]:
    return {g.name: (g.kind, g.units_before, g.units_after) for g in result.groups}


def test_uniform_takes_the_same_share_of_heads_and_neurons(tmp_path: Path) -> None:
    """Encoder layer, 4 heads and 100 FFN neurons at 0.5: uniform removes 2 heads and 50
    neurons; the default share allocation spreads the same total differently. The cut model
    computes what the masked one does (the surgery of the removed heads is exact)."""
    uniform = _shrink(tmp_path, structured_allocation="uniform")
    assert _units(uniform)["query"] == ("heads", 4, 2)
    assert _units(uniform)["intermediate"] == ("neurons", 100, 50)
    assert _units(_shrink(tmp_path)) != _units(uniform)
    masked = _shrink(tmp_path, cut=False, structured_allocation="uniform")
    check = builders.encoder_feeds(16, 1)
    for got, want in zip(
        run_model(uniform.model, check), run_model(masked.model, check), strict=True
    ):
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) <= 1e-4 * float(np.abs(want).max())


def test_naming_a_scorers_own_allocation_changes_nothing(tmp_path: Path) -> None:
    l1: dict[str, object] = {"structured_score": "l1"}
    pairs = (
        ({}, {"structured_allocation": "share"}),
        (l1, {**l1, "structured_allocation": "uniform"}),
    )
    for implicit, explicit in pairs:
        a = _shrink(tmp_path, **implicit).model.SerializeToString()
        b = _shrink(tmp_path, **explicit).model.SerializeToString()
        assert a == b
    # and the option really switches: l1 with the share allocation is another model
    l1_share = _shrink(tmp_path, structured_score="l1", structured_allocation="share")
    assert _units(l1_share) != _units(_shrink(tmp_path, structured_score="l1"))


def test_cli_allocation_is_checked_recorded_and_replayed(cli: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "uniform.onnx"
    done = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--structured", 0.3,
               "--structured-allocation", "uniform", "-o", out, "--json")  # fmt: skip
    assert done.code == 0, done.err
    groups = json.loads(done.out)["structured"]
    active = [g for g in groups if not g["frozen"]]
    assert active and all(
        g["units_before"] - g["units_after"] == round(0.3 * g["units_before"]) for g in active
    )
    recipe = Path(str(out) + ".recipe.json")
    assert json.loads(recipe.read_text())["structured_allocation"] == "uniform"
    replayed = tmp_path / "replayed.onnx"
    assert (
        cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, "--recipe", recipe, "-o", replayed, "-q").code
        == 0
    )
    assert replayed.read_bytes() == out.read_bytes()
    for args, message in (
        (("--sparsity", 0.5, "--structured-allocation", "uniform"), "needs --structured"),
        (("--structured", 0.3, "--structured-allocation", "even"), "--structured-allocation"),
    ):
        bad = tmp_path / "bad.onnx"
        done = cli(EXAMPLE_CNN, "--calib", EXAMPLE_CALIB, *args, "-o", bad)
        assert done.code == 2 and message in done.err, done.err
        assert len(done.err.strip().splitlines()) == 1 and not bad.exists()
