"""Compare out-of-distribution scores on the features `bench/card_ood.py --dump` saved.

    python bench/card_ood.py tests/models/trained-without-lgg-flair.keras ../shared/data \\
        --exclude lgg-flair --other lgg-flair --dump runs/ood-without-lgg.npz
    python bench/ood_variants.py runs/ood-without-lgg.npz

Each variant is fitted on the training split's features and thresholded at a quantile of the
validation split's scores (0.95 and 0.99); printed: AUROC of the in-source test split against
every slice of each other source and against the test split with its head's contrast inverted,
and the share of each beyond the threshold. training.ood ships the class-conditional Gaussian
with a shared covariance on unit-length features (docs/experiments.md, experiment 41).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

Score = Callable[[np.ndarray], np.ndarray]


def mahalanobis(means: np.ndarray, precision: np.ndarray, x: np.ndarray) -> np.ndarray:
    nearest = np.full(len(x), np.inf)
    for mean in means:
        diff = x - mean
        nearest = np.minimum(nearest, np.einsum("ij,ij->i", diff @ precision, diff))
    out: np.ndarray = np.sqrt(np.maximum(nearest, 0))
    return out


def unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def class_conditional(train: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    means = np.stack([train[labels == c].mean(0) for c in (0, 1)])
    precision = LedoitWolf(assume_centered=True).fit(train - means[labels]).precision_
    return means, precision


def variants(train: np.ndarray, labels: np.ndarray) -> dict[str, Score]:
    means, precision = class_conditional(train, labels)
    unit_means, unit_precision = class_conditional(unit(train), labels)
    single = LedoitWolf().fit(train)
    per_class = [LedoitWolf().fit(train[labels == c]) for c in (0, 1)]
    neighbours = NearestNeighbors(n_neighbors=10).fit(unit(train))
    return {
        "class-conditional, shared covariance": lambda x: mahalanobis(means, precision, x),
        "the same on unit-length features (shipped)": lambda x: mahalanobis(
            unit_means, unit_precision, unit(x)
        ),
        "one Gaussian": lambda x: mahalanobis(single.location_[None], single.precision_, x),
        "relative (class-conditional minus one Gaussian)": lambda x: (
            mahalanobis(means, precision, x) - mahalanobis(single.location_[None], single.precision_, x)
        ),
        "a covariance per class": lambda x: np.min(
            np.stack([mahalanobis(g.location_[None], g.precision_, x) for g in per_class]), 0
        ),
        "10th nearest neighbour, unit length": lambda x: neighbours.kneighbors(unit(x))[0][:, -1],
    }


def main() -> None:
    dump = np.load(sys.argv[1])
    others = {name: dump[name] for name in dump.files if name.startswith("other ")}
    for name, score in variants(dump["train"], dump["train_labels"]).items():
        inside, validation = score(dump["test"]), score(dump["validation"])
        parts = [name]
        for other, features in {"inverted contrast": dump["inverted"], **others}.items():
            away = score(features)
            truth = np.r_[np.zeros(len(inside)), np.ones(len(away))]
            parts.append(f"AUROC {other} {roc_auc_score(truth, np.r_[inside, away]):.4f}")
            for q in (0.95, 0.99):
                limit = np.quantile(validation, q)
                parts.append(f"q{q}: {np.mean(inside > limit):.3f} in, {np.mean(away > limit):.3f} {other}")
        print(" | ".join(parts))


if __name__ == "__main__":
    main()
