"""A model's figures on one source's slices by level: all, mid-level, and the top and base of the head.

    brainscan score ../shared/data/lgg-flair --format csv > lgg.csv
    python bench/levels.py lgg.csv --threshold 0.2218 [--pattern '^(TCGA_.+)_\\d+\\.\\w+$']

A scan's clear slices are mostly at the top and base of the head and its tumour slices mid-brain,
so a model can separate them by level instead of by tumour. `training.grouping.mid_levels` finds
each subject's middle half of slice numbers (file names ending `_<slice number>`, the subject
from --pattern, lgg-flair's by default); the rows show whether clear mid-brain slices are flagged.
Labels come from the `yes`/`no` folder of each path; rows whose `error` is set are left out.
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
    paths: list[str], probs: np.ndarray, threshold: float, pattern: str
) -> list[tuple[str, Metrics]]:
    from training.dataset import label_from_path
    from training.grouping import mid_levels, subjects_of
    from training.metrics import compute_metrics

    labels = np.array([label_from_path(PurePosixPath(p))[0] for p in paths])
    known = np.array([label is not None for label in labels])
    y = labels[known].astype(np.int64)
    names = [p for p, k in zip(paths, known, strict=True) if k]
    mid = mid_levels(names, subjects_of(names, [""] * len(names), pattern))
    p = probs[known]
    parts = (("all", np.ones(len(y), dtype=bool)), ("mid-level", mid), ("top and base", ~mid))
    return [(name, compute_metrics(y[m], p[m], threshold)) for name, m in parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("scores", type=Path, help="`brainscan score --format csv` output")
    parser.add_argument("--threshold", type=float, required=True, help="the model's threshold")
    parser.add_argument("--pattern", default=LGG_PATTERN, help="subject = first group, on the file name")
    args = parser.parse_args()
    rows = [r for r in csv.DictReader(args.scores.open()) if not r["error"]]
    paths, probs = [r["path"] for r in rows], np.array([float(r["probability"]) for r in rows])
    print(f"{'slices':<14} {'n':>5} {'tumour':>6} {'clear':>6} {'recall':>7} {'spec':>6} {'AUC':>6}")
    for name, m in level_rows(paths, probs, args.threshold, args.pattern):
        print(
            f"{name:<14} {m.n:>5} {m.tp + m.fn:>6} {m.tn + m.fp:>6} {m.recall:>7.3f} "
            f"{m.specificity:>6.3f} {m.auc or float('nan'):>6.3f}"
        )


if __name__ == "__main__":
    main()
