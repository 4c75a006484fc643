"""Per-image results: what a batch still has to score, idempotent upserts, filtered listings.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.orm import Session

from db.bulk import upsert_scored
from db.models import ERRORS, FALSE_NEGATIVES, FLAGGED, ImageResult, Series, utcnow

STREAM_CHUNK = 2000  # rows fetched per round trip when streaming an export


@dataclass(frozen=True, slots=True)
class PendingImage:
    """An image of a batch still to score: its row id, path relative to the job's source, label,
    and frame (0: the file is one image; 1..: that frame of a multi-frame file)."""

    id: int
    relpath: str
    label: int | None
    frame: int = 0
    threshold: float | None = None  # its series' site threshold; None: the job's


@dataclass(frozen=True, slots=True)
class ScoredImage:
    """The outcome for one image: a probability and flag, or an error saying why there is none."""

    relpath: str
    probability: float | None
    flagged: bool | None
    error: str | None = None
    content_hash: str | None = None
    frame: int = 0
    error_permanent: bool = False  # a re-run would fail the same way: it does not retry the image
    ood_distance: float | None = None  # how unlike the training images (training.ood)
    out_of_distribution: bool | None = None  # beyond the model's threshold: unflagged, not assessed


def pending_images(*, session: Session, batch_id: int) -> list[PendingImage]:
    """The batch's images not yet scored (pending, or errors from an earlier attempt that another
    try may pass), in order."""
    stmt = (
        select(ImageResult.id, ImageResult.relpath, ImageResult.label, ImageResult.frame, Series.threshold)
        .outerjoin(Series, Series.id == ImageResult.series_id)
        .where(
            ImageResult.batch_id == batch_id,
            ImageResult.status != "scored",
            ImageResult.error_permanent.is_(False),
        )
        .order_by(ImageResult.id)
    )
    return [PendingImage(*row) for row in session.execute(stmt)]


def _row(result: ScoredImage, now: datetime) -> dict[str, Any]:
    error = result.error
    if error is None and result.probability is None:
        error = "no probability was produced"
    scored = error is None
    return {
        "relpath": result.relpath,
        "frame": result.frame,
        "content_hash": result.content_hash,
        "status": "scored" if scored else "error",
        "error": error,
        "error_permanent": result.error_permanent and not scored,
        "ood_distance": result.ood_distance if scored else None,
        "out_of_distribution": result.out_of_distribution if scored else None,
        "probability": result.probability if scored else None,
        "flagged": result.flagged if scored else None,
        "scored_at": now if scored else None,
    }


def record_results(*, session: Session, job_id: int, batch_id: int, results: Sequence[ScoredImage]) -> None:
    """Upsert one row per (job, relpath, frame): the first score wins, errors are overwritten.

    Running it again with the same input changes nothing and adds no row. An image the planner did
    not record is inserted into `batch_id` (size 0, no label).
    """
    if not results:
        return
    now = utcnow()
    rows = {(r.relpath, r.frame): _row(r, now) for r in results}  # one per frame: the last given wins
    upsert_scored(session, job_id=job_id, batch_id=batch_id, rows=list(rows.values()))


ORDERS = {  # how a listing is sorted; planning order unless asked
    "planned": (ImageResult.id,),
    "score_desc": (ImageResult.probability.desc(), ImageResult.id),
    "score_asc": (ImageResult.probability.asc(), ImageResult.id),
}


def _filtered(job_id: int, flagged: bool | None, false_negatives: bool, errors: bool) -> Select[ImageResult]:
    # The literal predicates match the partial indexes word for word (see db.models).
    stmt = select(ImageResult).where(ImageResult.job_id == job_id)
    if flagged is not None:
        stmt = stmt.where(text(FLAGGED if flagged else "flagged = false"))
    if false_negatives:
        stmt = stmt.where(text(FALSE_NEGATIVES))
    if errors:
        stmt = stmt.where(text(ERRORS))
    return stmt


def list_results(
    *,
    session: Session,
    job_id: int,
    flagged: bool | None = None,
    false_negatives: bool = False,
    errors: bool = False,
    limit: int = 100,
    after_id: int | None = None,
    order: str = "planned",
    offset: int = 0,
) -> list[ImageResult]:
    """One page of the job's results, in planning order (pass the last id seen as `after_id`) or
    by score (`order` score_desc or score_asc: pages by `offset`, for the web view's galleries)."""
    stmt = _filtered(job_id, flagged, false_negatives, errors).order_by(*ORDERS[order]).limit(limit)
    if after_id is not None:
        stmt = stmt.where(ImageResult.id > after_id)
    return list(session.scalars(stmt.offset(offset) if offset else stmt))


def iter_results(
    *,
    session: Session,
    job_id: int,
    flagged: bool | None = None,
    false_negatives: bool = False,
    errors: bool = False,
) -> Iterator[ImageResult]:
    """All the job's matching results in planning order, streamed (CSV export of any size)."""
    stmt = (
        _filtered(job_id, flagged, false_negatives, errors)
        .order_by(ImageResult.id)
        .execution_options(yield_per=STREAM_CHUNK)
    )
    yield from session.scalars(stmt)


def permanent_errors(*, session: Session, job_id: int) -> int:
    """How many of the job's images failed for good: their bytes are no usable slice, so a re-run
    does not try them again."""
    stmt = select(func.count()).where(
        ImageResult.job_id == job_id, text(ERRORS), ImageResult.error_permanent.is_(True)
    )
    return int(session.scalar(stmt) or 0)


def unreadable_labelled(*, session: Session, job_id: int) -> dict[str, int]:
    """The job's images that carry a label but could not be scored, by label: they are in no
    confusion matrix, so a page that shows the matrix must show them beside it."""
    rows = session.execute(
        select(ImageResult.label, func.count())
        .where(ImageResult.job_id == job_id, text(ERRORS), ImageResult.label.is_not(None))
        .group_by(ImageResult.label)
    ).all()
    counts = {label: int(n) for label, n in rows}
    return {"tumour": counts.get(1, 0), "no_tumour": counts.get(0, 0)}
