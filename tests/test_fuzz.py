"""Property-based fuzzing: random MLP / CNN graphs through ``onnxprune.prune``.

Graphs: chains of MatMul / Gemm / Conv layers with optional biases and activations, residual
Add and Concat branches, weights shared by two layers, weights in Constant nodes or behind a
Transpose, opsets 13 / 17 / 18, fp32 or fp16. Every generated graph is valid and runs in
onnxruntime, so for every example the tool must either write a model that passes the full ONNX
check, runs in onnxruntime with the original's output shapes and dtypes, changed nothing but the
weights (and, for contrib, biases) it reports, and reached the requested sparsity on the layers
it reports (within one weight per row, every row keeping ``min(K, min_row_weights)`` weights);
or fail with a documented one-line ``OnnxPruneError``.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from ort_run import first_output

import onnxprune
from onnxprune.config import PruneConfig
from onnxprune.errors import EXIT_BAD_INPUT, EXIT_USAGE, EXIT_WRITE_FAILED, OnnxPruneError
from onnxprune.pipeline import Pruner
from onnxprune.structure.scores import keep_floor

SAMPLES = 24
ACTIVATIONS = ("Relu", "Sigmoid", "Tanh", None)


@dataclass
class Graph:
    """A graph under construction and what the fuzz test needs to know about its weights."""

    rng: np.random.Generator
    dtype: type
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    # weight name -> how its stored value becomes the (out, K) matrix: "T", "N" or "conv"
    orientation: dict[str, str] = field(default_factory=dict)
    count: int = 0

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def constant(self, name: str, value: np.ndarray, as_node: bool) -> None:
        tensor = numpy_helper.from_array(value.astype(self.dtype), name)
        if as_node:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        else:
            self.initializers.append(tensor)

    def weight(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return self.rng.standard_normal(shape) / math.sqrt(fan_in)

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _activation(g: Graph, x: str, draw: st.DrawFn) -> str:
    act = draw(st.sampled_from(ACTIVATIONS))
    return g.node(act, [x]) if act else x


def _linear(g: Graph, x: str, k: int, n: int, draw: st.DrawFn) -> str:
    """MatMul (weight stored, as a Constant node, or behind a Transpose) or Gemm, +- bias."""
    name = g.fresh("W")
    bias = draw(st.booleans())
    kind = draw(st.sampled_from(["matmul", "matmul_const", "matmul_transposed", "gemm", "gemm_t"]))
    if kind.startswith("gemm"):
        trans = kind == "gemm_t"
        w = g.weight((n, k) if trans else (k, n), k)
        g.constant(name, w, as_node=False)
        g.orientation[name] = "N" if trans else "T"
        inputs = [x, name]
        if bias:
            g.constant(name + "_b", 0.1 * g.rng.standard_normal(n), as_node=False)
            inputs.append(name + "_b")
        return g.node("Gemm", inputs, transB=int(trans))
    if kind == "matmul_transposed":
        g.constant(name, g.weight((n, k), k), as_node=False)
        g.orientation[name] = "N"
        seen = g.node("Transpose", [name], perm=[1, 0])
    else:
        g.constant(name, g.weight((k, n), k), as_node=kind == "matmul_const")
        g.orientation[name] = "T"
        seen = name
    out = g.node("MatMul", [x, seen])
    if bias:
        g.constant(name + "_b", 0.1 * g.rng.standard_normal(n), as_node=False)
        out = g.node("Add", [out, name + "_b"])
    return out


@st.composite
def mlp(draw: st.DrawFn, g: Graph) -> tuple[list[int | str], str, int]:
    """x[batch, K] -> blocks -> a last linear layer; returns (input shape, output, its width)."""
    width = draw(st.integers(3, 12))
    shape: list[int | str] = ["batch", width]
    x = "x"
    for _ in range(draw(st.integers(1, 4))):
        block = draw(st.sampled_from(["linear", "residual", "concat", "shared"]))
        if block == "linear":
            out = draw(st.integers(2, 12))
            x = _activation(g, _linear(g, x, width, out, draw), draw)
            width = out
        elif block == "residual":
            hidden = draw(st.integers(2, 12))
            h = g.node("Relu", [_linear(g, x, width, hidden, draw)])
            x = g.node("Add", [x, _linear(g, h, hidden, width, draw)])
        elif block == "concat":
            a, b = draw(st.integers(1, 8)), draw(st.integers(1, 8))
            left = _activation(g, _linear(g, x, width, a, draw), draw)
            right = _linear(g, x, width, b, draw)
            x = g.node("Concat", [left, right], axis=-1)
            width = a + b
        else:  # one square weight read by two MatMuls
            name = g.fresh("W")
            g.constant(name, g.weight((width, width), width), as_node=draw(st.booleans()))
            g.orientation[name] = "T"
            h = g.node("Relu", [g.node("MatMul", [x, name])])
            x = g.node("MatMul", [h, name])
    out = draw(st.integers(1, 6))
    return shape, _linear(g, x, width, out, draw), out


@st.composite
def cnn(draw: st.DrawFn, g: Graph) -> tuple[list[int | str], str, int]:
    """x[batch, C, S, S] -> conv blocks -> pool -> a last linear layer."""
    channels, size = draw(st.integers(1, 3)), draw(st.integers(3, 6))
    shape: list[int | str] = ["batch", channels, size, size]
    x = "x"
    for _ in range(draw(st.integers(1, 3))):
        kernel = draw(st.sampled_from([1, 3]))
        depthwise = channels > 1 and draw(st.booleans())
        out = channels if depthwise else draw(st.integers(1, 8))
        group = channels if depthwise else 1
        name = g.fresh("C")
        fan_in = channels // group * kernel * kernel
        w = g.weight((out, channels // group, kernel, kernel), fan_in)
        g.constant(name, w, as_node=draw(st.booleans()))
        g.orientation[name] = "conv"
        inputs = [x, name]
        if draw(st.booleans()):
            g.constant(name + "_b", 0.1 * g.rng.standard_normal(out), as_node=False)
            inputs.append(name + "_b")
        pads = [kernel // 2] * 4
        conv = g.node("Conv", inputs, kernel_shape=[kernel, kernel], pads=pads, group=group)
        conv = _activation(g, conv, draw)
        x = g.node("Add", [x, conv]) if out == channels and draw(st.booleans()) else conv
        channels = out
    flat = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    out = draw(st.integers(1, 5))
    return shape, _linear(g, flat, channels, out, draw), out


@st.composite
def cases(draw: st.DrawFn) -> tuple[onnx.ModelProto, Graph, dict[str, object]]:
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    g = Graph(np.random.default_rng(draw(st.integers(0, 2**16))), dtype)
    builder = draw(st.sampled_from([mlp, cnn]))
    shape, y, width = draw(builder(g))
    elem = TensorProto.FLOAT if dtype is np.float32 else TensorProto.FLOAT16
    model = builders.finish(
        "fuzz",
        g.nodes,
        [builders.value_info("x", shape, elem)],
        [builders.value_info(y, ["batch", width], elem)],
        g.initializers,
        opset=draw(st.sampled_from([13, 17, 18])),
        ir_version=8,
        producer="",
        check=False,  # check_case checks it, as the first of its assertions
    )
    method = draw(st.sampled_from(["wanda", "wanda", "wanda", "contrib"]))
    options: dict[str, object] = {
        "sparsity": draw(st.integers(5, 95)) / 100,
        "method": method,
        "group": "row",
        "min_row_weights": draw(st.sampled_from([0, 2, 8])),
        "num_samples": 16,
        # None: the method's default (contrib: --update and sensitivity allocation).
        "update": draw(st.sampled_from([None, False, True])),
        "allocation": draw(st.sampled_from([None, "group", "sensitivity"])),
    }
    return model, g, options


def _first(model: Path | onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The output; onnxruntime's warnings about the odd random graphs are silenced."""
    return first_output(model, feed, log_level=4)


def _matrix(value: np.ndarray, orientation: str) -> np.ndarray:
    if orientation == "T":
        return value.T
    return value.reshape(value.shape[0], -1)


def check_case(model: onnx.ModelProto, g: Graph, options: dict[str, object]) -> None:
    onnx.checker.check_model(model, full_check=True)
    feed = builders.random_inputs(model, SAMPLES, seed=0)
    original = _first(model, feed)  # a valid, runnable graph: the tool has no excuse
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        path = builders.save(model, Path(tmp) / "m.onnx")
        out = Path(tmp) / "out.onnx"
        try:
            report = onnxprune.prune(path, [feed], output=out, **options)  # type: ignore[arg-type]
        except OnnxPruneError as err:  # allowed: a documented, one-line failure
            event(f"failed: {type(err).__name__}")
            assert err.exit_code in (EXIT_USAGE, EXIT_BAD_INPUT, EXIT_WRITE_FAILED)
            assert "\n" not in str(err) and str(err)
            assert not out.exists()
            return
        event(f"pruned {len(report.layers)} layers" if report.layers else report.status)
        onnx.checker.check_model(str(out), full_check=True)
        pruned = onnx.load(str(out))
        result = _first(out, feed)
        assert result.shape == original.shape and result.dtype == original.dtype
        assert np.isfinite(result.astype(np.float64)).all()

        # Every weight the generator made is a prunable layer, reported once.
        reported = {layer.weight: layer for layer in report.layers}
        assert set(reported) == set(g.orientation), (set(reported), report.skipped)
        before, after = builders.stored_weights(model), builders.stored_weights(pruned)
        floor = int(options["min_row_weights"])  # type: ignore[call-overload]
        target = float(options["sparsity"])  # type: ignore[arg-type]
        zeros, sizes, rows, room = [], [], [], []
        for name, layer in reported.items():
            value = after[name]
            assert value.dtype == before[name].dtype and value.shape == before[name].shape
            kept = value != 0
            if not report.arguments["update"]:  # reconstruction re-fits the kept weights
                np.testing.assert_array_equal(value[kept], before[name][kept])
            assert layer.nonzero_after == int(kept.sum())
            matrix = _matrix(value, g.orientation[name])
            r, k = matrix.shape
            assert np.count_nonzero(matrix, axis=1).min() >= min(k, floor), name
            zeros.append(value.size - int(kept.sum()))
            sizes.append(value.size)
            rows.append(r)
            room.append(value.size - r * min(k, floor))
        expected = min(target * sum(sizes), sum(room))
        assert abs(sum(zeros) - expected) <= sum(rows), (zeros, sizes, room, target)
        # Nothing but the reported weights changes (wanda has no bias compensation, and
        # without --update no residual goes into the bias).
        if options["method"] == "wanda" and not report.arguments["update"]:
            assert len(pruned.graph.node) == len(model.graph.node)
            for name, value in before.items():
                if name not in reported:
                    np.testing.assert_array_equal(after[name], value)


FUZZ_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=200, derandomize=True, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(cases())
def test_random_graphs(case: tuple[onnx.ModelProto, Graph, dict[str, object]]) -> None:
    check_case(*case)


@pytest.mark.slow
@settings(max_examples=2000, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(cases())
def test_random_graphs_long(case: tuple[onnx.ModelProto, Graph, dict[str, object]]) -> None:
    check_case(*case)


# -- structured removal on the same random graphs -------------------------------------------


@st.composite
def structured_cases(draw: st.DrawFn) -> tuple[onnx.ModelProto, dict[str, object]]:
    model, _, _ = draw(cases())
    options: dict[str, object] = {
        "structured": draw(st.sampled_from([0.1, 0.25, 0.5, 0.9])),
        "structured_score": draw(st.sampled_from(["variance", "l1", "variance-uniform"])),
        "num_samples": 16,
    }
    return model, options


def check_structured_case(model: onnx.ModelProto, options: dict[str, object]) -> None:
    """The cut model runs, keeps the floor of every group, and computes exactly what the masked
    and compensated model computes; or the tool fails with a documented one-line error."""
    feed = builders.random_inputs(model, SAMPLES, seed=0)
    original = _first(model, feed)
    with tempfile.TemporaryDirectory(prefix="fuzz-structured-") as tmp:
        path = builders.save(model, Path(tmp) / "m.onnx")
        config = PruneConfig(sparsity=0.0, **options)  # type: ignore[arg-type]
        try:
            pruner = Pruner(path, [feed], config)
            cut, masked = pruner.shrink(cut=True), pruner.shrink(cut=False)
        except OnnxPruneError as err:
            event(f"failed: {type(err).__name__}")
            assert err.exit_code in (EXIT_USAGE, EXIT_BAD_INPUT)
            assert "\n" not in str(err) and str(err)
            return
        shrunk = sum(g.units_before - g.units_after for g in cut.groups)
        event("shrunk" if shrunk else "nothing to shrink")
        onnx.checker.check_model(cut.model, full_check=True)
        got, want = _first(cut.model, feed), _first(masked.model, feed)
        assert got.shape == original.shape and got.dtype == original.dtype
        assert np.isfinite(got.astype(np.float64)).all()
        tolerance = 1e-4 if got.dtype == np.float32 else 2e-2
        scale = max(float(np.abs(want.astype(np.float64)).max()), 1e-6)
        assert float(np.abs(got.astype(np.float64) - want).max()) <= tolerance * scale
        for group in cut.groups:
            assert group.units_after <= group.units_before
            if group.frozen:
                assert group.units_after == group.units_before
            else:
                assert group.units_after >= keep_floor(group.units_before)


@settings(max_examples=100, derandomize=True, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(structured_cases())
def test_random_graphs_structured(case: tuple[onnx.ModelProto, dict[str, object]]) -> None:
    check_structured_case(*case)


@pytest.mark.slow
@settings(max_examples=1000, **FUZZ_SETTINGS)  # type: ignore[arg-type]
@given(structured_cases())
def test_random_graphs_structured_long(case: tuple[onnx.ModelProto, dict[str, object]]) -> None:
    check_structured_case(*case)
