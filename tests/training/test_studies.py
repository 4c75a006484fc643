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
