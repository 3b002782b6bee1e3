"""Pictures of a run: fidelity against sparsity, and per-layer sparsity (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UsageError
from .report import LayerReport, Report


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise UsageError(
            "--plot needs matplotlib: pip install 'onnxprune[plot]' (or pip install matplotlib)"
        ) from err


# Colours the plot test looks for in the image (pixels): gates, the dense reference.
GATE_COLOR = "tab:orange"
DENSE_COLOR = "tab:green"


def draw(report: Report, path: Path) -> None:
    """Two panels. Left: fidelity against sparsity (the search or sweep curve, the dense
    original at sparsity 0 and its reference line at 1, the gate thresholds, the final model on
    the reported samples). Right: per-layer sparsity, each bar labelled with the layer's
    parameter count (a small layer pruned hard matters less than a big one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report.layers
    fig, (curve_ax, bars_ax) = plt.subplots(
        1, 2, figsize=(12, max(4.0, 0.28 * len(layers) + 1.5)), dpi=100
    )
    _draw_curve(curve_ax, report)
    _draw_gates_and_final(curve_ax, report)
    _draw_layers(bars_ax, layers, report.achieved_sparsity)
    fig.suptitle(f"{Path(report.model).name}: {report.method}, {report.group}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _draw_curve(ax: Any, report: Report) -> None:
    """The dense original and the search or sweep curve (``ax``: matplotlib Axes)."""
    # The original compared with itself: cosine and top-1 agreement are 1 at sparsity 0.
    ax.axhline(1.0, color=DENSE_COLOR, linestyle=":", linewidth=1.5, label="dense (original)")
    ax.plot([0.0], [1.0], "o", color=DENSE_COLOR, markersize=9)
    points: list[dict[str, Any]] = sorted(report.curve, key=lambda p: p["sparsity"])
    if points:
        xs = [p["sparsity"] for p in points]
        used = sorted({str(p["samples"]) for p in points if "samples" in p})
        on = f" ({' / '.join(used)})" if used else ""
        ax.plot(
            xs, [p["cosine"] for p in points], "o-", color="tab:blue",
            label=f"mean output cosine{on}",
        )  # fmt: skip
        if any(p.get("top1") is not None for p in points):
            ax.plot(xs, [p.get("top1") for p in points], "s--", color="tab:purple", label="top-1")
        if any(p.get("accuracy") is not None for p in points):
            ax.plot(
                xs, [p.get("accuracy") for p in points], "^-.", color="tab:brown", label="accuracy"
            )
        for p in points:
            if p.get("passes") is False:
                ax.plot(p["sparsity"], p["cosine"], "x", color="red", markersize=10)
    else:
        ax.text(0.5, 0.5, "no curve: use --sweep or --sparsity auto", ha="center")


def _draw_gates_and_final(ax: Any, report: Report) -> None:
    """The gate thresholds, the final model's fidelity and the axes' labels."""
    for key, label in (("min_cosine", "--min-cosine"), ("min_top1", "--min-top1")):
        if key in report.gates:
            ax.axhline(
                report.gates[key], color=GATE_COLOR, linestyle="--", linewidth=1.5,
                label=f"gate {label} {report.gates[key]:g}",
            )  # fmt: skip
    fidelity = report.fidelity
    drop = report.gates.get("max_accuracy_drop")
    if fidelity is not None and drop is not None and fidelity.accuracy_original is not None:
        floor = fidelity.accuracy_original - drop
        ax.axhline(floor, color=GATE_COLOR, linestyle="-.", label="gate accuracy")
    if fidelity is not None and fidelity.outputs:
        final = float(sum(o.cosine for o in fidelity.outputs) / len(fidelity.outputs))
        ax.plot(
            [report.target_sparsity], [final], "*", color="black", markersize=14,
            label=f"output: cosine on {fidelity.samples} {fidelity.source}",
        )  # fmt: skip
    ax.axvline(report.target_sparsity, color="gray", linestyle=":")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("fidelity (pruned vs original)")
    ax.set_title("fidelity vs sparsity")
    ax.set_xlim(-0.02, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def _draw_layers(ax: Any, layers: list[LayerReport], overall: float) -> None:
    """Per-layer sparsity bars, each labelled with the layer's parameter count."""
    names = [layer.name for layer in layers]
    positions = range(len(layers))
    ax.barh(positions, [layer.sparsity for layer in layers], color="tab:blue")
    for y, layer in zip(positions, layers, strict=True):
        ax.text(min(layer.sparsity, 0.98) + 0.01, y, f"{layer.params:,}", va="center", fontsize=7)
    ax.set_yticks(list(positions), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15)
    ax.axvline(overall, color="red", linestyle="--", label="overall")
    ax.set_xlabel("sparsity (bar labels: parameters)")
    ax.set_title("per-layer sparsity")
    ax.legend(loc="lower right")
