"""Interleaved A/B of two source trees of onnxprune on the cost benchmark's models.

Whole-process timings on a shared machine move by 10-20% from one run to the next, more than
most single changes save. Alternating fresh CLI processes between the two trees, round by
round, puts both under the same conditions; compare the columns of one run, never across runs.

For each case of ``run_cost.py`` (``--only`` selects them) and each round: the default run at
sparsity 0.5 (``--quiet``), or ``--method wanda`` with ``--wanda``, first with ``BEFORE`` on
``PYTHONPATH`` and then with ``AFTER``; wall time and the peak RSS of the process. Run it from
a directory outside both trees (``python -m`` puts the working directory first on the path).

Usage::

    git worktree add /tmp/base <rev>
    python benchmarks/ab_trees.py /tmp/base . --rounds 2 --only minilm mobile --out ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from run_cost import SPARSITY, _measured, byte_compile, cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="source tree run first in every round")
    parser.add_argument("after", type=Path, help="source tree run second in every round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="+", default=["minilm", "mobile", "detector_640"])
    parser.add_argument("--models-dir", type=Path, default=Path("bench_models"))
    parser.add_argument("--wanda", action="store_true", help="--method wanda instead")
    parser.add_argument("--out", type=Path, help="JSON file of every measurement")
    args = parser.parse_args()
    trees = [args.before.resolve(), args.after.resolve()]
    if Path.cwd().resolve() in trees:
        parser.error("run it from outside both trees: python -m would import the current one")
    for tree in trees:
        byte_compile(tree)  # as an installed copy is (see run_cost.py)
    args.models_dir.mkdir(parents=True, exist_ok=True)
    extra = ["--method", "wanda"] if args.wanda else []
    rows = []
    output = Path(tempfile.mkdtemp(prefix="ab_trees-")) / "pruned.onnx"
    for case in (c for c in cases(args.models_dir) if c.name in args.only):
        for number in range(args.rounds):
            for tree in trees:
                os.environ["PYTHONPATH"] = str(tree)  # inherited by the measured process
                wall, rss_kib, done = _measured(
                    [
                        *(sys.executable, "-m", "onnxprune.cli", str(case.model)),
                        *("--calib", str(case.calib), "--sparsity", str(SPARSITY)),
                        *("-o", str(output), "--quiet", *extra),
                    ]
                )
                if done.returncode != 0:
                    sys.exit(f"{case.name} failed with {tree}: exit {done.returncode}")
                rows.append(
                    {
                        "case": case.name,
                        "round": number,
                        "tree": str(tree),
                        "seconds": round(wall, 2),
                        "peak_rss_mb": rss_kib // 1024,
                    }
                )
                print(f"{case.name} {tree}: {wall:.1f} s, {rss_kib // 1024} MB", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
