"""The benchmark suite's ``--quick`` mode, end to end: every section measured on the digits
models (the committed bundle, no PyTorch), then checked through the typed result records."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "run_benchmarks.py"


@pytest.fixture(scope="module")
def suite() -> Iterator[dict[str, ModuleType]]:
    """The ``benchsuite`` modules (they live next to the script, not in the package)."""
    import importlib

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "benchmarks"))
        names = ("codec", "main", "records", "render", "results")
        yield {n: importlib.import_module(f"benchsuite.{n}") for n in names}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``--quick`` in a fresh process where ``import torch`` fails, into a temp dir."""
    out = tmp_path_factory.mktemp("quick")
    blocker = tmp_path_factory.mktemp("no_torch")
    (blocker / "torch").mkdir()
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is blocked')\n")
    published = (REPO / "BENCHMARKS.md").read_bytes()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out-dir", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(blocker)},
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert (REPO / "BENCHMARKS.md").read_bytes() == published  # the published file is untouched
    return out


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield float(value)


def test_quick_measures_every_section(quick: Path, suite: dict[str, ModuleType]) -> None:
    raw = json.loads((quick / "results.json").read_text())
    results = suite["results"].load_results(quick / "results.json")
    # The records write back exactly the JSON they were read from.
    assert suite["codec"].to_json(results) == raw
    assert all(math.isfinite(x) for x in _numbers(raw))
    assert results.meta.models == ("digits_cnn", "digits_mlp")
    assert set(results.quality) == {"digits_cnn", "digits_mlp"}
    assert results.speed is not None and results.memory is not None
    failures = [r for b in results.quality.values() for r in b.rows if r.failure]
    failures += [r for r in (*results.speed.rows, *results.memory.rows) if r.failure]
    assert failures == []


def test_quick_quality_rows(quick: Path, suite: dict[str, ModuleType]) -> None:
    results = suite["results"].load_results(quick / "results.json")
    for model, block in results.quality.items():
        dense = block.dense.metric
        assert dense > 0.95, model  # both dense digits classifiers are accurate
        assert {r.sparsity for r in block.rows} == {0.5, 0.9}
        assert {r.method for r in block.rows} >= {"contrib", "magnitude", "wanda"}
        for row in block.rows:
            out = row.outcome
            assert out.calibration_samples == 64
            assert abs(out.achieved_sparsity - row.sparsity) < 5e-3
            assert out.tool_accuracy_original == pytest.approx(dense)
            # the suite's own accuracy of the written model equals the tool's
            assert row.score.accuracy == pytest.approx(out.tool_accuracy_pruned)
            assert 0.0 <= row.value <= 1.0
            assert -1.0 <= out.tool_cosine <= 1.0
            if row.sparsity == 0.9:  # nine weights in ten gone: the outputs move (the
                # accuracy on 450 test digits may still equal the dense model's)
                assert row.value <= dense and out.tool_cosine < 0.9999, (model, row.label)
        contrib = {r.sparsity: r.value for r in block.rows if r.label == "contrib"}
        magnitude = {r.sparsity: r.value for r in block.rows if r.label == "magnitude"}
        assert contrib[0.5] > dense - 0.02
        assert contrib[0.9] > magnitude[0.9]


def test_quick_speed_and_memory(quick: Path, suite: dict[str, ModuleType]) -> None:
    results = suite["results"].load_results(quick / "results.json")
    speed, memory = results.speed, results.memory
    assert 0.0 < speed.startup.median < 60.0
    assert [(r.model, r.method) for r in speed.rows] == [
        ("digits_cnn", "wanda"),
        ("digits_cnn", "contrib"),
    ]
    for row in speed.rows:
        assert len(row.plain_runs) == len(row.cli_runs) == 1
        s = row.summary
        assert s.cli_median > s.plain_inference_median > 0.0
        assert s.ratio == pytest.approx(s.cli_median / s.plain_inference_median)
        assert s.calibration_samples == 64 and s.median_timings["total"] > 0.0
    for mrow in memory.rows:
        small, large = mrow.runs
        assert (small.num_samples_arg, large.num_samples_arg) == (16, 64)
        assert small.calibration_samples == 16 and large.calibration_samples == 64
        assert small.peak_rss_kib > 20 * 1024  # an interpreter with onnxruntime loaded
        assert 0.5 < mrow.ratio < 2.0
    assert [p.model for p in memory.plain] == ["digits_cnn"]


def test_quick_markdown_renders_from_records(quick: Path, suite: dict[str, ModuleType]) -> None:
    text = (quick / "BENCHMARKS.md").read_text()
    results = suite["results"].load_results(quick / "results.json")
    assert suite["render"].render_markdown(results) == text
    for heading in ("## 1. Quality", "### digits_cnn", "### digits_mlp", "## 2. Speed",
                    "## 3. Memory", "- quick run (`--quick`)"):  # fmt: skip
        assert heading in text
    assert "## Errors" not in text
    assert "| method / config | group | 0.5 | 0.9 |" in text
    assert "| digits_cnn | wanda | " in text and "| digits_cnn | contrib | " in text


def test_quick_refuses_the_published_files(suite: dict[str, ModuleType]) -> None:
    published = REPO / "BENCHMARKS.md"
    with pytest.raises(SystemExit, match="never writes the published"):
        suite["main"].main(["--quick", "--markdown", str(published)])


def test_published_results_round_trip(suite: dict[str, ModuleType]) -> None:
    """The committed results (all four models, kept sections) load into records, write back
    the same JSON and render every model's block; no measurement needed."""
    path = REPO / "benchmarks" / "results.json"
    results = suite["results"].load_results(path)
    assert suite["codec"].to_json(results) == json.loads(path.read_text())
    records = suite["records"]
    mobile = results.quality["mobile"].rows
    assert all(isinstance(r, records.MobileRow) for r in mobile)
    assert {r.sparsity for r in mobile} >= {"2:4"}
    assert all(isinstance(r.score, records.EmbeddingScore) for r in results.quality["minilm"].rows)
    text = suite["render"].render_markdown(results)
    for model in ("digits_cnn", "digits_mlp", "minilm", "mobile"):
        assert f"### {model}" in text
    assert "except the quality section(s), kept from the earlier run" in text
