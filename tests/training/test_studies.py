"""Studies for `brainscan evaluate --level study`: which study a slice is in, and the max rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.dataset import discover
from training.studies import Slice, slices_of, studies_of, study_arrays

LGG_PATTERN = r"^(TCGA_.+)_\d+\.\w+$"


def test_a_study_scores_its_best_assessed_slice_and_is_a_tumour_if_any_slice_is() -> None:
    s = [
        Slice(Path("a1"), 0, 0, "A", True),
        Slice(Path("a2"), 0, 1, "A", True),
        Slice(Path("a3"), 0, 0, "A", False),  # a localiser: its 0.99 does not count
        Slice(Path("b1"), 0, 0, "B", True),
        Slice(Path("b2"), 0, None, "B", True),  # unreadable: no score
        Slice(Path("c1"), 0, None, "C", False),  # only a localiser: not assessed
    ]
    studies = studies_of(s, [0.2, 0.6, 0.99, 0.1, None, 0.5])
    assert studies.keys == ["A", "B", "C"]
    assert studies.labels == [1, 0, None] and studies.scores == [0.6, 0.1, None]
    y, p = study_arrays(studies)
    np.testing.assert_array_equal(y, [1, 0])
    np.testing.assert_array_equal(p, [0.6, 0.1])


def test_lgg_flair_by_its_file_names_is_110_patients(lgg_flair: Path) -> None:
    found = discover([lgg_flair])
    slices, skipped = slices_of(found.images, subject_pattern=LGG_PATTERN)
    assert len(slices) == len(found.images) and not skipped
    assert len({s.study for s in slices}) == 110
    folders, _ = slices_of(found.images)  # without the pattern, each folder is a study
    assert {s.study for s in folders} == {"lgg-flair/yes", "lgg-flair/no"}


def test_study_figures_take_each_subject_s_best_slice_and_leave_out_slices_without_one() -> None:
    from training.studies import study_figures

    subjects = ["p1", "p1", "p2", "p2", "p3", ""]
    labels = [0, 1, 0, 0, 1, 1]
    scores = [0.9, 0.2, 0.05, 0.01, 0.4, 0.99]
    figures = study_figures(subjects, labels, scores, threshold=0.3)
    assert figures == {
        "studies": 3,
        "with_tumour": 2,
        "without_tumour": 1,
        "recall": 1.0,  # p1 (its best slice, 0.9) and p3 (0.4)
        "specificity": 1.0,  # p2's best slice, 0.05, stays below
        "lowest_tumour_study_score": 0.4,
    }
    assert study_figures(["", ""], [1, 0], [0.5, 0.5], 0.3) is None
    assert study_figures(["p"], [1], [0.5], 0.3)["specificity"] is None  # type: ignore[index]


def test_the_study_threshold_keeps_every_validation_tumour_and_never_exceeds_the_slice_one() -> None:
    from training.crossval import FitTask
    from training.studies import study_card, study_threshold

    assert study_threshold({"lowest_tumour_study_score": 0.02}, 0.05) == 0.02
    assert study_threshold({"lowest_tumour_study_score": 0.9}, 0.05) == 0.05
    assert study_threshold(None, 0.05) == 0.05
    subjects = ["a", "a", "b", "b", "c", "c"]
    labels = np.array([1, 0, 1, 1, 1, 0])
    task = FitTask("final", np.array([], dtype=int), np.array([0, 1, 2, 3]), np.array([4, 5]))
    card = study_card(subjects, labels, task, np.array([0.03, 0.01, 0.6, 0.2]), np.array([0.04, 0.5]), 0.05)
    assert card is not None and card["rule"] == "max" and card["threshold"] == 0.03  # a's best slice
    assert card["validation"]["recall"] == 1.0 and card["test"]["recall"] == 1.0  # c's 0.5
