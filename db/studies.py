"""Study verdicts: a job's series and their images, summed up per study in one query.

A study is flagged when any image of a series the model is fit for is flagged (its score is the
highest such probability: the max rule at the job's threshold); `not assessed` when no such image
was scored (every series a localiser or a derived map, or every image unreadable); `not flagged`
otherwise. Each series carries its own verdict the same way. Images still pending are counted, so
a study of a running job says how much of it the verdict has seen.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import ImageResult, Series
from db.progress import count_where

FLAGGED, NOT_FLAGGED, NOT_ASSESSED = "flagged", "not flagged", "not assessed"


@dataclass
class SeriesVerdict:
    """One series' images and verdict."""

    series_key: str
    description: str
    plane: str
    not_assessed: str | None  # why the model is not fit for it; None when it is
    images: int
    scored: int
    pending: int
    flagged_images: int
    score: float | None  # the highest probability of its scored images

    @property
    def verdict(self) -> str:
        if self.not_assessed is not None or self.scored == 0:
            return NOT_ASSESSED
        return FLAGGED if self.flagged_images else NOT_FLAGGED

    @property
    def reason(self) -> str | None:
        """Why the series is not assessed, in words; None when it is."""
        if self.not_assessed is not None:
            return self.not_assessed
        if self.scored == 0:
            return "no image of it was scored yet" if self.pending else "none of its images could be read"
        return None


@dataclass
class StudyVerdict:
    """One study: its series and the verdict they add up to."""

    study_key: str
    patient_key: str | None
    series: list[SeriesVerdict] = field(default_factory=list)

    @property
    def assessed(self) -> list[SeriesVerdict]:
        return [s for s in self.series if s.verdict != NOT_ASSESSED]

    @property
    def verdict(self) -> str:
        assessed = self.assessed
        if not assessed:
            return NOT_ASSESSED
        return FLAGGED if any(s.verdict == FLAGGED for s in assessed) else NOT_FLAGGED

    @property
    def score(self) -> float | None:
        scores = [s.score for s in self.assessed if s.score is not None]
        return max(scores) if scores else None

    def total(self, name: str) -> int:
        """A count (images, pending, flagged_images...) summed over the study's series."""
        return sum(getattr(s, name) for s in self.series)


def study_verdicts(
    *, session: Session, job_id: int, study_keys: list[str] | None = None
) -> list[StudyVerdict]:
    """Every study of the job (or those named), flagged first (highest score first), then not
    flagged, then not assessed; series within a study by description."""
    stmt = (
        select(
            Series.study_key,
            Series.patient_key,
            Series.series_key,
            Series.description,
            Series.plane,
            Series.not_assessed,
            func.count(ImageResult.id),
            count_where(ImageResult.status == "scored"),
            count_where(ImageResult.status == "pending"),
            count_where(ImageResult.flagged.is_(True)),
            func.max(ImageResult.probability),
        )
        .join(ImageResult, ImageResult.series_id == Series.id)
        .where(Series.job_id == job_id)
        .group_by(Series.id)
    )
    if study_keys is not None:
        stmt = stmt.where(Series.study_key.in_(study_keys))
    studies: dict[str, StudyVerdict] = {}
    by_study: dict[str, list[SeriesVerdict]] = defaultdict(list)
    for study_key, patient_key, *series in session.execute(stmt):
        studies.setdefault(study_key, StudyVerdict(study_key, patient_key))
        by_study[study_key].append(SeriesVerdict(*series))
    for key, study in studies.items():
        study.series = sorted(by_study[key], key=lambda s: (s.description, s.series_key))
    order = {FLAGGED: 0, NOT_FLAGGED: 1, NOT_ASSESSED: 2}
    return sorted(studies.values(), key=lambda s: (order[s.verdict], -(s.score or 0.0), s.study_key))


def top_images(
    *, session: Session, job_id: int, study_keys: list[str], k: int
) -> dict[str, list[ImageResult]]:
    """The `k` highest-scoring images of each named study (a study's top slices), best first."""
    if not study_keys:
        return {}
    rank = (
        func.row_number()
        .over(partition_by=Series.study_key, order_by=(ImageResult.probability.desc(), ImageResult.id))
        .label("rank")
    )
    ranked = (
        select(ImageResult.id, Series.study_key, rank)
        .join(Series, ImageResult.series_id == Series.id)
        .where(
            Series.job_id == job_id,
            Series.study_key.in_(study_keys),
            Series.not_assessed.is_(None),
            ImageResult.status == "scored",
        )
        .subquery()
    )
    stmt = (
        select(ImageResult, ranked.c.study_key)
        .join(ranked, ranked.c.id == ImageResult.id)
        .where(ranked.c.rank <= k)
        .order_by(ranked.c.study_key, ranked.c.rank)
    )
    found: dict[str, list[ImageResult]] = defaultdict(list)
    for image, study_key in session.execute(stmt):
        found[study_key].append(image)
    return dict(found)
