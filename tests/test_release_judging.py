"""What judging keeps (sessions, boundary values, probe outputs, pruned layers, scores) is
dropped once the candidate is chosen (``Pruner.release_judging``) and rebuilt on demand: a
later build writes the same model, and the suffix sessions are gone after the sensitivity
curves."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import builders
import onnx
import onnxruntime as ort
import pytest

from onnxprune import verify
from onnxprune.config import PruneConfig
from onnxprune.pipeline import Pruner, references
from onnxprune.pipeline.references import References


@pytest.mark.parametrize("make", [builders.residual_cnn, builders.cnn_bn])
def test_a_build_after_release_writes_the_same_model(
    tmp_path: Path, make: Callable[..., onnx.ModelProto]
) -> None:
    model = make(seed=3)
    path = builders.save(model, tmp_path / "model.onnx")
    calib = builders.write_npz(tmp_path / "calib.npz", builders.random_inputs(model, 48, seed=2))
    pruner = Pruner(path, calib, PruneConfig(sparsity=0.6))
    first = pruner.build()
    # The default (sensitivity allocation) judged single layers on suffix sessions; those
    # are released with the curves, before the whole-model comparison that follows them.
    assert pruner.sensitivity_builds > 0
    assert pruner._cuts is not None  # judged on suffix sessions
    assert pruner._suffix is None and pruner._boundary is None
    pruner.release_judging()
    assert pruner._trial_reference is None and not pruner._pruned and not pruner._scores
    second = pruner.build()
    assert first.group == second.group
    assert _weights(first.model) == _weights(second.model)


@pytest.mark.parametrize("make", [builders.mlp_gemm, builders.cnn_bn])
def test_dropping_xtx_for_its_factor_writes_the_same_model(
    tmp_path: Path, make: Callable[..., onnx.ModelProto], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default run drops each layer's x^T x once its inverse-Hessian factor is made and
    keeps the factor past ``release_judging`` instead: the written model is the one a run
    that keeps x^T x writes, before and after the release. A run that reads x^T x again
    (--stat-correction here) keeps it."""
    model = make(seed=4)
    path = builders.save(model, tmp_path / "model.onnx")
    calib = builders.write_npz(tmp_path / "calib.npz", builders.random_inputs(model, 48, seed=5))
    dropping = Pruner(path, calib, PruneConfig(sparsity=0.6))
    dropped = dropping.build()
    names = [layer.weight_name for layer in dropping.layers]
    assert all(dropping.statistics()[name].inputs.xtx is None for name in names)
    dropping.release_judging()
    assert set(dropping._factors) == set(names)
    again = dropping.build()
    monkeypatch.setattr(Pruner, "_factor_replaces_xtx", lambda self: False)
    keeping = Pruner(path, calib, PruneConfig(sparsity=0.6))
    kept = keeping.build()
    assert all(keeping.statistics()[name].inputs.xtx is not None for name in names)
    assert _weights(dropped.model) == _weights(kept.model) == _weights(again.model)
    monkeypatch.undo()
    correcting = Pruner(path, calib, PruneConfig(sparsity=0.6, stat_correction=True))
    correcting.build()
    assert all(correcting.statistics()[name].inputs.xtx is not None for name in names)


def test_the_probe_references_share_one_session_over_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output-size probe, the --group auto reference and the sensitivity reference run
    the original in one session, built and dropped while they are made; the model is the one
    written when each builds its own."""
    # 512 outputs: the --group auto reference takes 32 samples, the sensitivity one 16 (both
    # fewer than the calibration reference's).
    model = builders.mlp_matmul((16, 64, 64, 512), seed=6)
    path = builders.save(model, tmp_path / "model.onnx")
    calib = builders.write_npz(tmp_path / "calib.npz", builders.random_inputs(model, 96, seed=3))
    built: list[Path] = []

    def counting(module: object) -> None:
        real = module.make_session  # type: ignore[attr-defined]

        def make(original: Path, arena: bool = True) -> ort.InferenceSession:
            built.append(original)
            return real(original, arena)

        monkeypatch.setattr(module, "make_session", make)

    counting(references)
    counting(verify)
    sharing = Pruner(path, calib, PruneConfig(sparsity=0.6))
    shared = sharing.build()
    # One session over the original for judging (``build`` does not run the held-out check).
    assert built == [path]
    assert sharing._shared_original is None
    trial, sensitivity = sharing._trial_reference, sharing._sensitivity_reference
    assert trial is not None and sensitivity is not None
    assert [int(trial.selected.sum()), int(sensitivity.selected.sum())] == [32, 16]
    assert trial.ran and sensitivity.ran
    assert trial.session is None and sensitivity.session is None  # released once they ran

    @contextmanager
    def separate(self: References) -> Iterator[None]:
        yield  # no shared session: each reference builds its own

    monkeypatch.setattr(References, "_one_original_session", separate)
    built.clear()
    own = Pruner(path, calib, PruneConfig(sparsity=0.6)).build()
    assert len(built) == 3  # the output-size probe and the two references
    assert _weights(shared.model) == _weights(own.model)


def _weights(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: t.SerializeToString() for t in model.graph.initializer}


_HEAP_PROBE = """
import numpy as np
from onnxprune.heap import trim_heap
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20
big = np.ones(16 << 20, dtype=np.uint8)
del big  # glibc now serves blocks under 16 MiB from its heap, not from their own mappings
blocks = [np.ones(8 << 20, dtype=np.uint8) for _ in range(25)]
pin = np.ones(1 << 20, dtype=np.uint8)  # in use above them: the heap's top is not free
held = rss()
del blocks
freed = rss()
trim_heap()
print(held, freed, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_heap_returns_freed_heap_blocks_to_the_system() -> None:
    """What ``release_judging`` relies on: 200 MiB of numpy arrays freed below a block still
    in use stay with the process (glibc keeps them) until ``trim_heap`` gives them back. Run
    in a fresh interpreter, so that nothing else shapes the heap."""
    done = subprocess.run(
        [sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, check=True
    )
    held, freed, trimmed = (int(v) for v in done.stdout.split())
    if freed < held - 150:
        pytest.skip("this allocator gave the freed blocks back by itself")
    assert trimmed < freed - 150, (held, freed, trimmed)
