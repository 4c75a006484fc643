"""Radiologists' review of a job: the queue, their verdicts, and what the verdicts say of the model.

The queue holds a job's flagged images, highest score first, then a random sample of its unflagged
ones (`sample_fraction`, 2 % by default): without reviewed unflagged images the tumours the model
missed, and so its recall, cannot be estimated. The sample is fixed per image (a hash of its id),
so every reviewer sees the same one. What the reviews say is estimated per stratum: the share of
flagged images that are tumours (from the reviewed flagged ones), and the share of unflagged
images that are (from the reviewed sample only: the other unflagged images a reviewer opened were
not drawn at random), each with a 95 % Clopper-Pearson interval; recall and specificity follow by
weighting the two by the job's flagged and unflagged counts, their intervals from the strata's
bounds (conservative). "Unsure" verdicts count nowhere.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scipy.stats import beta
from sqlalchemy import ColumnElement, and_, func, literal_column, select
from sqlalchemy.orm import Session

from db.models import REVIEW_VERDICTS, ImageResult, Review, utcnow
from db.progress import count_where

SAMPLE_FRACTION = 0.02
_SPAN = 2**31
_GOLDEN = 1_327_217_885  # 2**31 / golden ratio: consecutive ids land far apart (a Weyl sequence)


def in_sample(fraction: float) -> ColumnElement[bool]:
    """Whether an image is in the job's fixed random sample: its id, hashed into [0, 2**31) by
    multiplication with the golden ratio (64-bit integer arithmetic in SQL), below `fraction`."""
    hashed = ((ImageResult.id % literal_column(str(_SPAN))) * literal_column(str(_GOLDEN))) % literal_column(
        str(_SPAN)
    )
    return hashed < literal_column(str(int(fraction * _SPAN)))


def review_queue(
    *, session: Session, job_id: int, limit: int, sample_fraction: float = SAMPLE_FRACTION
) -> list[ImageResult]:
    """The next images to review: unreviewed flagged ones by descending score, then the unreviewed
    ones of the unflagged sample."""
    unreviewed = ~select(Review.result_id).where(Review.result_id == ImageResult.id).exists()
    base = select(ImageResult).where(ImageResult.job_id == job_id, ImageResult.status == "scored", unreviewed)
    flagged = list(
        session.scalars(
            base.where(ImageResult.flagged.is_(True))
            .order_by(ImageResult.probability.desc(), ImageResult.id)
            .limit(limit)
        )
    )
    if len(flagged) == limit:
        return flagged
    sample = base.where(ImageResult.flagged.is_(False), in_sample(sample_fraction)).order_by(ImageResult.id)
    return flagged + list(session.scalars(sample.limit(limit - len(flagged))))


def record_review(*, session: Session, job_id: int, result_id: int, verdict: str, reviewer: str) -> bool:
    """Store `verdict` on a scored image of the job (replacing an earlier one); False when the job
    has no such scored image."""
    if verdict not in REVIEW_VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(REVIEW_VERDICTS)}, not {verdict!r}")
    image = session.get(ImageResult, result_id)
    if image is None or image.job_id != job_id or image.status != "scored":
        return False
    review = session.get(Review, result_id)
    if review is None:
        session.add(
            Review(result_id=result_id, job_id=job_id, verdict=verdict, reviewer=reviewer, at=utcnow())
        )
    else:
        review.verdict, review.reviewer, review.at = verdict, reviewer, utcnow()
    return True


@dataclass(frozen=True)
class Proportion:
    """k of n, with its 95 % Clopper-Pearson interval."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        low = 0.0 if self.k == 0 else float(beta.ppf(0.025, self.k, self.n - self.k + 1))
        high = 1.0 if self.k == self.n else float(beta.ppf(0.975, self.k + 1, self.n - self.k))
        return (low, high) if self.n else (0.0, 1.0)


def reviewed_figures(
    *, session: Session, job_id: int, sample_fraction: float = SAMPLE_FRACTION
) -> dict[str, Any]:
    """The reviewed matrix (model flag against verdict), and recall and specificity estimated
    from the two strata, with intervals."""
    tumour = count_where(Review.verdict == "tumour")
    counted = and_(Review.result_id == ImageResult.id, Review.verdict != "unsure")
    sampled = in_sample(sample_fraction).label("sampled")
    rows = session.execute(
        select(ImageResult.flagged, sampled, func.count(), tumour)
        .join(Review, counted)
        .where(ImageResult.job_id == job_id)
        .group_by(ImageResult.flagged, sampled)
    ).all()
    totals = dict(
        session.execute(
            select(ImageResult.flagged, func.count())
            .where(ImageResult.job_id == job_id, ImageResult.status == "scored")
            .group_by(ImageResult.flagged)
        ).all()
    )
    matrix = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    flagged_k = flagged_n = sample_k = sample_n = 0
    for flagged, sampled, n, k in rows:
        k = int(k)
        matrix["tp" if flagged else "fn"] += k
        matrix["fp" if flagged else "tn"] += n - k
        if flagged:
            flagged_k, flagged_n = flagged_k + k, flagged_n + n
        elif sampled:
            sample_k, sample_n = sample_k + k, sample_n + n
    unsure = session.scalar(
        select(func.count()).select_from(Review).where(Review.job_id == job_id, Review.verdict == "unsure")
    )
    return {
        "reviewed": matrix,
        "unsure": int(unsure or 0),
        "flagged": {"images": int(totals.get(True, 0)), "reviewed": flagged_n},
        "unflagged": {"images": int(totals.get(False, 0)), "sample_reviewed": sample_n},
        **_estimates(Proportion(flagged_k, flagged_n), Proportion(sample_k, sample_n), totals),
        "sample_fraction": sample_fraction,
    }


def _estimates(ppv: Proportion, miss: Proportion, totals: dict[Any, int]) -> dict[str, Any]:
    """Recall and specificity from the share of tumours among flagged (ppv) and unflagged (miss)
    images, weighted by how many of each the job has; None without reviews in both strata."""
    flagged, unflagged = totals.get(True, 0), totals.get(False, 0)
    if not ppv.n or not miss.n:
        return {"recall": None, "specificity": None}

    def recall(p: float, m: float) -> float | None:
        found, missed = flagged * p, unflagged * m
        return found / (found + missed) if found + missed else None

    def specificity(p: float, m: float) -> float | None:
        clear, alarms = unflagged * (1 - m), flagged * (1 - p)
        return clear / (clear + alarms) if clear + alarms else None

    (p_low, p_high), (m_low, m_high) = ppv.interval, miss.interval
    assert ppv.value is not None and miss.value is not None
    return {
        "recall": {
            "estimate": recall(ppv.value, miss.value),
            "interval": [recall(p_low, m_high), recall(p_high, m_low)],
        },
        "specificity": {
            "estimate": specificity(ppv.value, miss.value),
            "interval": [specificity(p_low, m_high), specificity(p_high, m_low)],
        },
        "tumour_share_flagged": {"estimate": ppv.value, "interval": list(ppv.interval)},
        "tumour_share_unflagged": {"estimate": miss.value, "interval": list(miss.interval)},
    }


def reviewed_labels(*, session: Session, job_id: int) -> list[tuple[str, int, str]]:
    """(relpath, frame, verdict) of every reviewed image of the job, in planning order."""
    stmt = (
        select(ImageResult.relpath, ImageResult.frame, Review.verdict)
        .join(Review, Review.result_id == ImageResult.id)
        .where(ImageResult.job_id == job_id)
        .order_by(ImageResult.id)
    )
    return [(relpath, frame, verdict) for relpath, frame, verdict in session.execute(stmt)]
