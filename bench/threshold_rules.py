"""Threshold rules compared on saved held-out predictions: each picks a threshold from a fit's
validation part alone, and is judged on that fit's test part.

    python bench/threshold_rules.py runs/e37/remap.npz

Input: the .npz that `bench/variants.py --predictions` or `brainscan train --predictions` saves
(each fit's validation and test probabilities). Rules: the recall target on the pooled
validation part (the shipped policy, 0.993, and lower targets); the same target counted without
the validation part's tumour-edge slices (a scan's first and last tumour slice, often a sliver;
`training.grouping.tumour_edges`); and the target met on every source of the validation part
(the lowest of the per-source thresholds). Rows: cross-validation pooled over the folds (each
fold at its own threshold) and per source, then each left-out source of a leave-one-source-out
run. The columns are recall / specificity on the test part.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LGG_PATTERN = r"^(TCGA_.+)_\d+\.\w+$"
Rule = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]  # (y, p, edge, source) -> t


def pooled(target: float) -> Rule:
    from training.metrics import tune_threshold

    return lambda y, p, edge, source: tune_threshold(y, p, target)


def without_edges(target: float) -> Rule:
    from training.metrics import tune_threshold

    return lambda y, p, edge, source: tune_threshold(y[~edge], p[~edge], target)


def every_source(target: float) -> Rule:
    from training.metrics import tune_threshold

    def rule(y: np.ndarray, p: np.ndarray, edge: np.ndarray, source: np.ndarray) -> float:
        names = [s for s in np.unique(source) if (y[source == s] == 1).any()]
        return min(tune_threshold(y[source == s], p[source == s], target) for s in names)

    return rule


RULES: dict[str, Rule] = {
    "recall 0.993 (shipped)": pooled(0.993),
    "recall 0.98": pooled(0.98),
    "recall 0.95": pooled(0.95),
    "0.993 without edges": without_edges(0.993),
    "0.98 without edges": without_edges(0.98),
    "0.98 on every source": every_source(0.98),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--pattern", default=LGG_PATTERN, help="subject = first group, on the file name")
    args = parser.parse_args()
    from training.grouping import subjects_of, tumour_edges
    from training.metrics import pooled_metrics

    saved = np.load(args.predictions)
    y, relpaths = saved["labels"], [str(r) for r in saved["relpaths"]]
    if "sources" in saved:
        source = saved["sources"].astype(str)
    else:  # saved before sources were: a source is the root's name and its first folder
        source = np.array(["/".join(r.split("/")[:2]) for r in relpaths])
    edge = tumour_edges(relpaths, subjects_of(relpaths, [""] * len(relpaths), args.pattern), y.tolist())
    tasks = [str(t) for t in saved["tasks"]]
    folds = [i for i, t in enumerate(tasks) if t.startswith("fold")]
    left_out = [i for i, t in enumerate(tasks) if t.startswith("left out")]
    names = sorted(set(source.tolist()))
    print(
        f"{'rule':<24} "
        + " ".join(
            f"{c:>17}" for c in ["cv all", *names, *[tasks[i].removeprefix("left out ") for i in left_out]]
        )
    )
    for name, rule in RULES.items():
        cells = []
        if folds:
            idx = np.concatenate([saved[f"{i}_test_idx"] for i in folds])
            flagged = np.zeros(len(y), dtype=bool)
            probs = np.zeros(len(y))
            for i in folds:
                v, t = saved[f"{i}_val_idx"], saved[f"{i}_test_idx"]
                threshold = rule(y[v], saved[f"{i}_val"], edge[v], source[v])
                flagged[t], probs[t] = saved[f"{i}_test"] >= threshold, saved[f"{i}_test"]
            for part in [idx, *[idx[source[idx] == s] for s in names]]:
                m = pooled_metrics(y[part], probs[part], flagged[part])
                cells.append(f"{m.recall:.3f} / {m.specificity:.3f}")
        for i in left_out:
            v, t = saved[f"{i}_val_idx"], saved[f"{i}_test_idx"]
            threshold = rule(y[v], saved[f"{i}_val"], edge[v], source[v])
            m = pooled_metrics(y[t], saved[f"{i}_test"], saved[f"{i}_test"] >= threshold)
            cells.append(f"{m.recall:.3f} / {m.specificity:.3f}")
        print(f"{name:<24} " + " ".join(f"{c:>17}" for c in cells))


if __name__ == "__main__":
    main()
