"""The "mix" re-selection saliency (an experiment): obs^a * score^(1-a) interpolates the two."""

from __future__ import annotations

import numpy as np
import pytest

import onnxprune.reconstruct as R


def _choices(monkeypatch: pytest.MonkeyPatch, saliency: str, mix: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(3)
    out, width = 6, 8
    reselect = R.Reselect(rng.uniform(0.1, 2.0, (out, width)), 2.0, np.ones(width))
    block = rng.normal(size=(width, out))
    previous = np.zeros((width, out), dtype=bool)
    previous[:4] = True  # every row prunes 4 of 8
    monkeypatch.setattr(R, "RESELECT_SALIENCY", saliency)
    monkeypatch.setattr(R, "RESELECT_MIX", mix)
    return reselect.choose(block, rng.uniform(0.5, 2.0, width), previous, 0)


def test_mix_endpoints_are_obs_and_score(monkeypatch: pytest.MonkeyPatch) -> None:
    obs = _choices(monkeypatch, "obs")
    score = _choices(monkeypatch, "score")
    assert not np.array_equal(obs, score)  # the case distinguishes the two
    assert np.array_equal(_choices(monkeypatch, "mix", 1.0), obs)
    assert np.array_equal(_choices(monkeypatch, "mix", 0.0), score)
    middle = _choices(monkeypatch, "mix", 0.5)
    assert (middle.sum(axis=0) == 4).all()  # the per-row count is kept
