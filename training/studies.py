"""Images as the service sees them (frames, studies, series not assessed), for `brainscan evaluate`.

A job plans each DICOM file by its header (`training.dicom_header.contents_of`): one image per
frame, files with no MR image skipped. `slices_of` does the same for a folder given to `evaluate`,
so a job and `evaluate` score the same slices. Each slice belongs to a study: its DICOM
StudyInstanceUID; for other images its subject (labels.csv's subject column, or the first group of
a pattern on the file name: lgg-flair's `^(TCGA_.+)_\\d+\\.\\w+$` gives its 110 patients), else its
folder. A study's score is the highest score of its slices in series the model is fit for (the
max rule, as `db.studies` gives jobs' verdicts); its label is tumour when any labelled slice is.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from training.dataset import ImageRecord
from training.dicom_header import NotAnImage, contents_of, not_assessed
from training.grouping import subjects_of


@dataclass(frozen=True)
class Slice:
    """One image to score: a file, or a frame of one, with its label and study."""

    path: Path
    frame: int  # 0: the file is one image
    label: int | None
    study: str
    assessed: bool  # False: a localiser or a derived map, left out of its study's score

    @property
    def source(self) -> Path | tuple[Path, int]:
        """What Scorer.iter_scores takes: the file, or (file, frame) for a frame of one."""
        return (self.path, self.frame) if self.frame else self.path


def slices_of(
    records: Sequence[ImageRecord], *, subject_pattern: str = ""
) -> tuple[list[Slice], Counter[str]]:
    """The slices the records hold, and the files skipped by reason."""
    key = secrets.token_bytes(32)  # patients are only compared within this run
    subjects = subjects_of([r.relpath for r in records], [r.subject for r in records], subject_pattern)
    slices: list[Slice] = []
    skipped: Counter[str] = Counter()
    for record, subject in zip(records, subjects, strict=True):
        contents = contents_of(record.path, record.relpath, key=key)
        if isinstance(contents, NotAnImage):
            skipped[contents.reason] += 1
            continue
        header = contents.header
        folder = f"{record.source.split('/')[0]}/{PurePosixPath(record.relpath).parent}"  # root/...
        study = (header.study_uid if header else "") or subject or folder
        assessed = header is None or not_assessed(header.series) is None
        slices += [Slice(record.path, frame, record.label, study, assessed) for frame in contents.frames]
    return slices, skipped


@dataclass(frozen=True)
class Studies:
    """Per study: its label (None: no labelled slice), its score (None: nothing assessed scored)."""

    keys: list[str]
    labels: list[int | None]
    scores: list[float | None]


def studies_of(slices: Sequence[Slice], probabilities: Sequence[float | None]) -> Studies:
    """Each study's label and max-rule score from its slices' scores (None: not scored)."""
    labels: dict[str, int | None] = {}
    scores: dict[str, float | None] = {}
    for s, p in zip(slices, probabilities, strict=True):
        if s.label is not None:
            labels[s.study] = max(labels.get(s.study) or 0, s.label)
        else:
            labels.setdefault(s.study, None)
        best = scores.get(s.study)
        if s.assessed and p is not None:
            scores[s.study] = p if best is None else max(best, p)
        else:
            scores.setdefault(s.study, best)
    keys = sorted(labels)
    return Studies(keys, [labels[k] for k in keys], [scores[k] for k in keys])


def study_arrays(studies: Studies) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of the studies with both (the ones a confusion matrix can count)."""
    both = [
        (y, p) for y, p in zip(studies.labels, studies.scores, strict=True) if y is not None and p is not None
    ]
    return np.array([y for y, _ in both], dtype=np.int64), np.array([p for _, p in both], dtype=np.float64)


STUDY_RULE = "max"  # a study's score: its highest slice score, of the series the model is fit for


def study_figures(
    subjects: Sequence[str], labels: Sequence[int], probabilities: Sequence[float], threshold: float
) -> dict[str, Any] | None:
    """Study-level figures of labelled slices grouped by subject (slices without one are left
    out): each study's label is its slices' highest, its score their highest (STUDY_RULE); None
    when no slice has a subject. Specificity is None where no study is without a tumour."""
    studies: dict[str, tuple[int, float]] = {}
    for subject, label, p in zip(subjects, labels, probabilities, strict=True):
        if subject:
            seen = studies.get(subject, (0, 0.0))
            studies[subject] = (max(seen[0], int(label)), max(seen[1], float(p)))
    if not studies:
        return None
    y = np.array([label for label, _ in studies.values()])
    score = np.array([p for _, p in studies.values()])
    flagged = score >= threshold
    tumour, clear = y == 1, y == 0
    return {
        "studies": len(studies),
        "with_tumour": int(tumour.sum()),
        "without_tumour": int(clear.sum()),
        "recall": float(flagged[tumour].mean()) if tumour.any() else None,
        "specificity": float((~flagged[clear]).mean()) if clear.any() else None,
        "lowest_tumour_study_score": float(score[tumour].min()) if tumour.any() else None,
    }


def study_threshold(validation: dict[str, Any] | None, slice_threshold: float) -> float:
    """The study threshold: the highest that keeps every validation study with a tumour flagged
    (its lowest score), but never above the slice threshold, so that a study with a flagged slice
    is always a flagged study, as the service reports it."""
    lowest = (validation or {}).get("lowest_tumour_study_score")
    return slice_threshold if lowest is None else min(slice_threshold, float(lowest))


def study_card(
    subjects: Sequence[str],
    labels: np.ndarray,
    task: Any,
    val_probs: np.ndarray,
    test_probs: np.ndarray,
    slice_threshold: float,
) -> dict[str, Any] | None:
    """The card's `study`: the rule, the study threshold tuned on the validation part's studies
    (`study_threshold`), and study-level figures on the validation and test parts; None when the
    images have no subjects (no study is known). `task`: a training.crossval.FitTask."""

    def part(index: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, Any] | None:
        return study_figures([subjects[i] for i in index], labels[index].tolist(), probs.tolist(), threshold)

    tuning = part(task.val, val_probs, slice_threshold)
    if tuning is None:
        return None
    threshold = study_threshold(tuning, slice_threshold)
    return {
        "rule": STUDY_RULE,
        "threshold": threshold,
        "tuned_on": f"validation part ({tuning['studies']} studies: every one with a tumour kept flagged, "
        "never above the slice threshold)",
        "validation": part(task.val, val_probs, threshold),
        "test": part(task.test, test_probs, threshold) if len(task.test) else None,
    }
