"""A model's figures on one source's slices by level: all, mid-level, the top and base of the head,
and its tumour slices at the edge of each scan's tumour against the rest.

    brainscan score ../shared/data/lgg-flair --format csv > lgg.csv
    python bench/levels.py lgg.csv --threshold 0.2218
    python bench/levels.py runs/e35/three.npz --source lgg-flair     # held-out fits' predictions

A scan's clear slices are mostly at the top and base of the head and its tumour slices mid-brain,
so a model can separate them by level instead of by tumour. `training.grouping.mid_levels` finds
each subject's middle half of slice numbers (file names ending `_<slice number>`, the subject
from --pattern, lgg-flair's by default); those rows show whether clear mid-brain slices are
flagged. A scan's first and last tumour slices (where a tumour begins and ends: often a sliver)
are reported apart from its other tumour slices. Input: a `brainscan score --format csv` file
(rows with an error are left out) at one --threshold, or the .npz that `brainscan train
--predictions` and `bench/variants.py --predictions` save, whose cross-validation folds' test
probabilities are pooled, each at its fold's threshold. Labels come from `yes`/`no` folders.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LGG_PATTERN = r"^(TCGA_.+)_\d+\.\w+$"


def level_rows(
    paths: list[str], probs: np.ndarray, thresholds: np.ndarray, pattern: str
) -> list[tuple[str, Metrics, float]]:
    """(name, figures, median score) per part of the slices; each flagged at its own threshold."""
    from training.dataset import label_from_path
    from training.grouping import mid_levels, subjects_of, tumour_edges
    from training.metrics import pooled_metrics

    labels = np.array([label_from_path(PurePosixPath(p))[0] for p in paths])
    known = np.array([label is not None for label in labels])
    y = labels[known].astype(np.int64)
    names = [p for p, k in zip(paths, known, strict=True) if k]
    subjects = subjects_of(names, [""] * len(names), pattern)
    edge = tumour_edges(names, subjects, y.tolist())
    mid = mid_levels(names, subjects)
    p, flagged = probs[known], (probs >= thresholds)[known]
    parts = (
        ("all", np.ones(len(y), dtype=bool)),
        ("mid-level", mid),
        ("top and base", ~mid),
        ("tumour edges", edge),
        ("other tumour", (y == 1) & ~edge),
    )
    return [
        (name, pooled_metrics(y[m], p[m], flagged[m]), float(np.median(p[m])) if m.any() else np.nan)
        for name, m in parts
    ]


def _from_predictions(path: Path, source: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    saved = np.load(path)
    relpaths, probs, thresholds = [], [], []
    for i, task in enumerate(saved["tasks"]):
        if not str(task).startswith("fold"):
            continue
        for index, prob in zip(saved[f"{i}_test_idx"], saved[f"{i}_test"], strict=True):
            relpath = str(saved["relpaths"][index])
            if source in relpath:
                relpaths.append(relpath)
                probs.append(prob)
                thresholds.append(float(saved[f"{i}_threshold"]))
    return relpaths, np.array(probs), np.array(thresholds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "scores", type=Path, help="a `brainscan score --format csv` file or a predictions .npz"
    )
    parser.add_argument("--threshold", type=float, help="the model's threshold (for a .csv)")
    parser.add_argument("--source", default="lgg-flair", help="the source's slices to read (for a .npz)")
    parser.add_argument("--pattern", default=LGG_PATTERN, help="subject = first group, on the file name")
    args = parser.parse_args()
    if args.scores.suffix == ".npz":
        paths, probs, thresholds = _from_predictions(args.scores, args.source)
    else:
        if args.threshold is None:
            parser.error("--threshold is needed for scores from brainscan score")
        rows = [r for r in csv.DictReader(args.scores.open()) if not r["error"]]
        paths, probs = [r["path"] for r in rows], np.array([float(r["probability"]) for r in rows])
        thresholds = np.full(len(probs), args.threshold)
    print(
        f"{'slices':<14} {'n':>5} {'tumour':>6} {'clear':>6} {'recall':>7} {'spec':>6} {'AUC':>6} "
        f"{'median':>7}"
    )
    for name, m, median in level_rows(paths, probs, thresholds, args.pattern):
        print(
            f"{name:<14} {m.n:>5} {m.tp + m.fn:>6} {m.tn + m.fp:>6} {m.recall:>7.3f} "
            f"{m.specificity:>6.3f} {m.auc or float('nan'):>6.3f} {median:>7.3f}"
        )


if __name__ == "__main__":
    main()
