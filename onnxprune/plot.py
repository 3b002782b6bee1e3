"""Pictures of a run: fidelity against sparsity, and per-layer sparsity (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UsageError
from .report import Report


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise UsageError(
            "--plot needs matplotlib: pip install 'onnxprune[plot]' (or pip install matplotlib)"
        ) from err


def draw(report: Report, path: Path) -> None:
    """Two panels: the fidelity curve (search or sweep) and the final per-layer sparsity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report.layers
    fig, (curve_ax, bars_ax) = plt.subplots(
        1, 2, figsize=(12, max(4.0, 0.28 * len(layers) + 1.5)), dpi=100
    )
    points: list[dict[str, Any]] = sorted(report.curve, key=lambda p: p["sparsity"])
    if points:
        xs = [p["sparsity"] for p in points]
        curve_ax.plot(xs, [p["cosine"] for p in points], "o-", label="mean output cosine")
        if any(p.get("top1") is not None for p in points):
            curve_ax.plot(xs, [p.get("top1") for p in points], "s--", label="top-1 agreement")
        if any(p.get("accuracy") is not None for p in points):
            curve_ax.plot(xs, [p.get("accuracy") for p in points], "^-.", label="accuracy")
        for p in points:
            if p.get("passes") is False:
                curve_ax.plot(p["sparsity"], p["cosine"], "x", color="red", markersize=10)
        curve_ax.legend(loc="lower left")
    else:
        curve_ax.text(0.5, 0.5, "no curve: use --sweep or --sparsity auto", ha="center")
    curve_ax.axvline(report.target_sparsity, color="gray", linestyle=":", label="chosen")
    curve_ax.set_xlabel("sparsity")
    source = report.fidelity.source if report.fidelity is not None else "held-out"
    curve_ax.set_ylabel(f"fidelity on {source} samples")
    curve_ax.set_title("fidelity vs sparsity")
    curve_ax.grid(True, alpha=0.3)
    names = [layer.name for layer in layers]
    bars_ax.barh(range(len(layers)), [layer.sparsity for layer in layers], color="tab:blue")
    bars_ax.set_yticks(range(len(layers)), names, fontsize=7)
    bars_ax.invert_yaxis()
    bars_ax.set_xlim(0, 1)
    bars_ax.axvline(report.achieved_sparsity, color="red", linestyle="--", label="overall")
    bars_ax.set_xlabel("sparsity")
    bars_ax.set_title("per-layer sparsity")
    bars_ax.legend(loc="lower right")
    fig.suptitle(f"{Path(report.model).name}: {report.method}, {report.group}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
