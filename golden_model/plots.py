"""Plots of training runs (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_learning_curves"]


def plot_learning_curves(runs: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """Test (solid) and train (dashed) accuracy per epoch for each named run (``TrainResult.to_dict()``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, run in runs.items():
        epochs = range(1, len(run["test_acc"]) + 1)
        line, = ax.plot(epochs, run["test_acc"], label=f"{label} test ({run['final_test_acc']:.3f})")
        ax.plot(epochs, run["train_acc"], linestyle="--", color=line.get_color(), alpha=0.6,
                label=f"{label} train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
