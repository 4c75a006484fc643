"""Group-aware stratified splits: a near-duplicate group never straddles train, validation and test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


@dataclass(frozen=True)
class Split:
    """Indices into the image list for each part."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def check_disjoint(self, groups: np.ndarray) -> None:
        """Raise if any group appears in two parts (a leak)."""
        parts = [set(groups[p].tolist()) for p in (self.train, self.val, self.test)]
        if parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]:
            raise AssertionError("a near-duplicate group straddles two parts of the split")


def group_kfold(
    labels: np.ndarray, groups: np.ndarray, k: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """K (rest, fold) index pairs; folds are stratified by label and never share a group."""
    if len(np.unique(groups)) < k:
        raise ValueError(f"only {len(np.unique(groups))} groups: cannot make {k} folds")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    yield from splitter.split(np.zeros(len(labels)), labels, groups)


def carve(
    indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (rest, part) with about `fraction` of them in part, by whole groups."""
    k = max(2, round(1 / fraction))
    rest, part = next(group_kfold(labels[indices], groups[indices], k, seed))
    return indices[rest], indices[part]


def train_val_test(labels: np.ndarray, groups: np.ndarray, *, val: float, test: float, seed: int) -> Split:
    """A three-way group-aware split; test may be 0 (then every image trains or validates)."""
    everything = np.arange(len(labels))
    if test > 0:
        rest, test_idx = carve(everything, labels, groups, test, seed)
    else:
        rest, test_idx = everything, np.zeros(0, dtype=np.int64)
    train_idx, val_idx = carve(rest, labels, groups, val / (1 - test), seed + 1)
    split = Split(np.sort(train_idx), np.sort(val_idx), np.sort(test_idx))
    split.check_disjoint(groups)
    return split
