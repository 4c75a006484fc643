"""Splits: stratified, and a group never straddles two parts."""

from __future__ import annotations

import numpy as np

from training.splits import group_kfold, train_val_test


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n // 3, n)  # about three images per group
    labels = (groups % 4 != 0).astype(np.int64)  # a group has one label; 75 % positive
    return labels, groups


def test_three_way_split_keeps_groups_whole_and_classes_balanced() -> None:
    labels, groups = _data()
    split = train_val_test(labels, groups, val=0.15, test=0.15, seed=1)
    parts = [set(groups[p].tolist()) for p in (split.train, split.val, split.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(split.train) + len(split.val) + len(split.test) == len(labels)
    for part in (split.val, split.test):
        assert 0.08 < len(part) / len(labels) < 0.25
        assert abs(labels[part].mean() - labels.mean()) < 0.08


def test_kfold_covers_every_image_once() -> None:
    labels, groups = _data(seed=2)
    seen = np.zeros(len(labels), int)
    for rest, fold in group_kfold(labels, groups, 5, seed=3):
        assert not set(groups[rest].tolist()) & set(groups[fold].tolist())
        seen[fold] += 1
    assert (seen == 1).all()


def test_same_seed_same_split() -> None:
    labels, groups = _data(seed=4)
    a = train_val_test(labels, groups, val=0.2, test=0.2, seed=9)
    b = train_val_test(labels, groups, val=0.2, test=0.2, seed=9)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.val, b.val)
