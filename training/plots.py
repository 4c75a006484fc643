"""PNG plots for the model card: learning curves, confusion matrix, ROC, threshold sweep, reliability."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from training.metrics import Metrics


def learning_curves(histories: Sequence[dict[str, list[float]]], path: Path) -> None:
    """Train and validation loss and AUC per epoch; an ensemble's members each in their own colour
    (train dashed, validation solid)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for index, history in enumerate(histories):
        member = f"member {index + 1} " if len(histories) > 1 else ""
        colour = {"color": f"C{index}"} if len(histories) > 1 else {}
        epochs = np.arange(1, len(history.get("loss", [])) + 1)
        for key, ax in (("loss", ax1), ("auc", ax2)):
            if key in history:
                ax.plot(epochs, history[key], "--" if member else "-", label=f"{member}train", **colour)
            if f"val_{key}" in history:
                ax.plot(epochs, history[f"val_{key}"], label=f"{member}validation", **colour)
    for key, ax in (("loss", ax1), ("auc", ax2)):
        ax.set_xlabel("epoch")
        ax.set_title(key.upper() if key == "auc" else key)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def confusion_matrix(m: Metrics, path: Path, title: str) -> None:
    grid = np.array([[m.tp, m.fn], [m.fp, m.tn]])
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(grid, cmap="Blues")
    for (r, c), value in np.ndenumerate(grid):
        colour = "white" if value > grid.max() / 2 else "black"
        ax.text(c, r, str(value), ha="center", va="center", fontsize=15, color=colour)
    ax.set_xticks([0, 1], ["flagged", "not flagged"])
    ax.set_yticks([0, 1], ["tumour", "no tumour"])
    ax.set_title(f"{title}\nthreshold {m.threshold:.3f}")
    _save(fig, path)


def roc(labels: np.ndarray, probs: np.ndarray, path: Path, threshold: float) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, thr = roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(labels, probs):.4f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    at = int(np.argmin(np.abs(thr - threshold)))
    ax.scatter([fpr[at]], [tpr[at]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def threshold_sweep(rows: list[dict[str, float]], path: Path, threshold: float) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    t = [r["threshold"] for r in rows]
    for key in ("accuracy", "recall", "specificity"):
        ax.plot(t, [r[key] for r in rows], marker="o", ms=3, label=key)
    ax.axvline(threshold, color="red", ls="--", lw=1, label=f"tuned {threshold:.3f}")
    ax.set_xlabel("threshold")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def reliability(labels: np.ndarray, probs: np.ndarray, path: Path, bins: int = 10) -> None:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges) - 1, 0, bins - 1)
    mean_p = [probs[which == b].mean() for b in range(bins) if (which == b).any()]
    frac = [labels[which == b].mean() for b in range(bins) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.plot(mean_p, frac, marker="o")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed tumour fraction")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
