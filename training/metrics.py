"""Confusion matrices, screening metrics and recall-first threshold tuning."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

SEED_SWEEP = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))  # the seed notebook's sweep


@dataclass(frozen=True)
class Metrics:
    """Screening figures at one threshold; flagged means probability >= threshold."""

    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    recall: float
    specificity: float
    precision: float
    auc: float | None
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def confusion(labels: np.ndarray, flagged: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn) for binary labels and boolean flags."""
    y, f = labels.astype(bool), flagged.astype(bool)
    return int((y & f).sum()), int((~y & f).sum()), int((~y & ~f).sum()), int((y & ~f).sum())


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Area under the ROC curve, or None when only one class is present."""
    if len(np.unique(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs))


def compute_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> Metrics:
    """All screening figures for labelled probabilities at one threshold."""
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    tp, fp, tn, fn = confusion(labels, probs >= threshold)
    n = tp + fp + tn + fn
    return Metrics(
        n=n,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=_ratio(tp + tn, n),
        recall=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        precision=_ratio(tp, tp + fp),
        auc=roc_auc(labels, probs),
        threshold=float(threshold),
    )


def pooled_metrics(labels: np.ndarray, probs: np.ndarray, flagged: np.ndarray) -> Metrics:
    """Figures of slices each flagged at its own fit's threshold (held-out folds pooled): the
    confusion matrix of `flagged`, the AUC of `probs` ranked together; no one threshold (NaN)."""
    m = compute_metrics(labels, np.asarray(flagged, dtype=np.float64), 0.5)
    return replace(m, auc=roc_auc(np.asarray(labels).astype(np.int64), probs), threshold=float("nan"))


def tune_threshold(
    labels: np.ndarray, probs: np.ndarray, recall_target: float, specificity_floor: float = 0.0
) -> float:
    """The highest threshold whose recall on these labels meets the target, then, with a
    specificity floor, lowered as far as specificity on these labels stays at or above the floor.

    With P positives, recall >= target needs the k = ceil(target * P) most probable positives
    flagged, so the recall threshold is the k-th highest positive probability. The floor spends a
    false-alarm budget on more recall: with N negatives, F = floor((1 - floor) * N) of them may be
    flagged, so the threshold may drop to just above the (F + 1)-th highest negative probability.
    It never rises above the recall threshold (recall comes first). 0 means no floor.
    """
    if not 0 < recall_target <= 1:
        raise ValueError("recall target must lie in (0, 1]")
    if not 0 <= specificity_floor <= 1:
        raise ValueError("specificity floor must lie in [0, 1]")
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    positives = np.sort(p[y == 1])[::-1]
    if positives.size == 0:
        raise ValueError("cannot tune a threshold without positive (tumour) examples")
    k = math.ceil(recall_target * positives.size - 1e-9)
    threshold = float(positives[k - 1])
    if specificity_floor > 0:
        lowest = specificity_threshold(y, p, specificity_floor)
        if lowest is not None:
            threshold = min(threshold, lowest)
    return threshold


def specificity_threshold(labels: np.ndarray, probs: np.ndarray, specificity: float) -> float | None:
    """The lowest threshold whose specificity on these labels is >= `specificity`, or None when no
    negative constrains it (there are none, or all of them may be flagged).

    With N negatives, F = floor((1 - specificity) * N) may be flagged, so the answer lies just
    above the (F + 1)-th highest negative probability.
    """
    negatives = np.sort(np.asarray(probs, dtype=np.float64)[np.asarray(labels) == 0])[::-1]
    allowed = math.floor((1 - specificity) * negatives.size + 1e-9)
    if allowed >= negatives.size:
        return None
    return float(np.nextafter(negatives[allowed], np.inf))


def sweep_table(
    labels: np.ndarray, probs: np.ndarray, thresholds: tuple[float, ...] = SEED_SWEEP
) -> list[dict[str, float]]:
    """The seed notebook's sweep: accuracy, recall, specificity and the share flagged per threshold."""
    rows = []
    for t in thresholds:
        m = compute_metrics(labels, probs, t)
        rows.append(
            {
                "threshold": float(t),
                "accuracy": m.accuracy,
                "recall": m.recall,
                "specificity": m.specificity,
                "flagged_share": float(np.mean(probs >= t)) if len(probs) else 0.0,
            }
        )
    return rows


def format_confusion(m: Metrics) -> str:
    """A confusion matrix and the headline figures, laid out for people."""
    auc = f"{m.auc:.4f}" if m.auc is not None else "n/a"
    lines = [
        "                 predicted tumour   predicted clear",
        f"actual tumour    {m.tp:>16d}   {m.fn:>15d}",
        f"actual clear     {m.fp:>16d}   {m.tn:>15d}",
        "",
        f"images {m.n}   threshold {m.threshold:.4f}",
        f"recall {m.recall:.4f}   specificity {m.specificity:.4f}   "
        f"accuracy {m.accuracy:.4f}   precision {m.precision:.4f}   AUC {auc}",
        f"missed tumours (false negatives): {m.fn}",
    ]
    return "\n".join(lines)
