"""What onnx-graphsurgeon costs where onnxprune could use it (README, "Dependencies").

For each model: a protobuf copy of the model (what a candidate model starts from today) against
an onnx-graphsurgeon import + export round trip (what building that candidate through
graphsurgeon would add), and the one place graphsurgeon is used (the ``If`` condition probe:
import, cleanup, export). Median of ``--rounds`` timings, one process.

    python benchmarks/graphsurgeon_cost.py /work/models/minilm.onnx /work/models/mobile.onnx
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from onnxprune.calibrate.routing import condition_probe


def median_seconds(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def proto_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| model | MB | protobuf copy | graphsurgeon import + export | condition probe |")
    print("|---|---:|---:|---:|---:|")
    for path in args.models:
        model = onnx.load(str(path))
        # Any node output stands in for an If condition: the probe's cost is the walk.
        condition = model.graph.node[len(model.graph.node) // 2].output[0]
        copy = median_seconds(lambda m=model: proto_copy(m), args.rounds)
        round_trip = median_seconds(lambda m=model: gs.export_onnx(gs.import_onnx(m)), args.rounds)
        probe = median_seconds(lambda m=model, c=condition: condition_probe(m, [c]), args.rounds)
        megabytes = model.ByteSize() / 1e6
        print(
            f"| {path.stem} | {megabytes:.1f} | {copy:.3f} s | {round_trip:.3f} s | {probe:.3f} s |"
        )


if __name__ == "__main__":
    main()
