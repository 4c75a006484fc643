"""Threshold tuning and screening metrics."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import compute_metrics, sweep_table, tune_threshold


def test_tuned_threshold_is_the_highest_meeting_the_recall_target() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(200, int), np.zeros(300, int)]
    probs = np.r_[rng.beta(5, 2, 200), rng.beta(2, 5, 300)]
    for target in (0.9, 0.95, 0.99, 1.0):
        t = tune_threshold(labels, probs, target)
        assert compute_metrics(labels, probs, t).recall >= target
        higher = np.nextafter(t, 1.0)
        assert compute_metrics(labels, probs, higher).recall < target


def test_metrics_match_a_hand_count() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    probs = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.05])
    m = compute_metrics(labels, probs, 0.5)
    assert (m.tp, m.fn, m.fp, m.tn) == (2, 1, 1, 3)
    assert m.recall == pytest.approx(2 / 3) and m.specificity == pytest.approx(3 / 4)
    assert m.accuracy == pytest.approx(5 / 7) and m.auc == pytest.approx(9 / 12)


def test_sweep_table_has_the_seed_columns_and_the_share_flagged() -> None:
    rows = sweep_table(np.array([1, 0]), np.array([0.8, 0.2]))
    assert rows[0].keys() == {"threshold", "accuracy", "recall", "specificity", "flagged_share"}
    assert len(rows) == 19
    assert [r["flagged_share"] for r in rows if r["threshold"] in (0.15, 0.5, 0.85)] == [1.0, 0.5, 0.0]


def test_tuning_without_positives_is_an_error() -> None:
    with pytest.raises(ValueError, match="positive"):
        tune_threshold(np.zeros(5, int), np.linspace(0, 1, 5), 0.99)


def test_specificity_floor_lowers_the_threshold_only_within_the_false_alarm_budget() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(300, int), np.zeros(200, int)]
    probs = np.r_[rng.beta(6, 2, 300), rng.beta(2, 6, 200)]
    recall_only = tune_threshold(labels, probs, 0.9)
    lowered = 0
    for floor in (0.8, 0.9, 0.95, 0.98):
        t = tune_threshold(labels, probs, 0.9, specificity_floor=floor)
        m = compute_metrics(labels, probs, t)
        assert t <= recall_only and m.recall >= 0.9
        assert m.specificity >= floor or t == recall_only  # recall first: the floor never raises it
        lowered += t < recall_only
        # the lowest such threshold: one step lower breaks the floor (or the recall rule set it)
        lower = compute_metrics(labels, probs, np.nextafter(t, 0.0))
        assert lower.specificity < floor or t == recall_only
    assert lowered >= 2
    # a floor the recall threshold already breaks changes nothing: recall comes first
    assert tune_threshold(labels, probs, 1.0, specificity_floor=0.999) == tune_threshold(labels, probs, 1.0)
    assert tune_threshold(labels, probs, 0.9, specificity_floor=0.0) == recall_only
    with pytest.raises(ValueError, match="floor"):
        tune_threshold(labels, probs, 0.9, specificity_floor=1.5)
