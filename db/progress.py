"""Counting a job in SQL: progress from its batches, confusion from its images, finishing it once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select, update
from sqlalchemy.orm import Session

from db.deliveries import plan_returns
from db.models import PENDING_BATCH_STATUSES, Batch, ImageResult, Job, utcnow
from db.notifications import job_ended


@dataclass(frozen=True, slots=True)
class JobProgress:
    """What the web view polls: counts summed over a job's batches (matrix over done batches)."""

    total: int
    scored: int
    failed: int
    flagged: int
    batches_total: int
    batches_done: int
    batches_failed: int
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def remaining(self) -> int:
        return max(self.total - self.scored - self.failed, 0)


def count_where(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    """SQL: how many rows of the group meet `condition` (0 for none), on any dialect."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _sum(column: Any) -> ColumnElement[Any]:
    return func.coalesce(func.sum(column), 0)


def job_progress(*, session: Session, job_id: int) -> JobProgress:
    """The job's progress, from its batches only (one indexed aggregate; raises LookupError if no job)."""
    progress = jobs_progress(session=session, job_ids=[job_id]).get(job_id)
    if progress is None:
        raise LookupError(f"no job {job_id}")
    return progress


def jobs_progress(*, session: Session, job_ids: Sequence[int]) -> dict[int, JobProgress]:
    """Progress of several jobs in one grouped aggregate (a page of the job list); absent ids are
    left out."""
    if not job_ids:
        return {}
    stmt = (
        select(
            Job.id,
            Job.total,
            _sum(Batch.scored),
            _sum(Batch.failed),
            _sum(Batch.flagged),
            func.count(Batch.id),
            count_where(Batch.status == "done"),
            count_where(Batch.status == "failed"),
            _sum(Batch.tp),
            _sum(Batch.fp),
            _sum(Batch.tn),
            _sum(Batch.fn),
        )
        .select_from(Job)
        .outerjoin(Batch, Batch.job_id == Job.id)
        .where(Job.id.in_(list(job_ids)))
        .group_by(Job.id, Job.total)
    )
    return {int(row[0]): JobProgress(*(int(value) for value in row[1:])) for row in session.execute(stmt)}


def _scored_groups(session: Session, job_id: int, since: datetime | None = None) -> list[tuple[Any, ...]]:
    # (label, flagged, images, images scored since `since`) in one pass over the job's scored rows;
    # without `since`, only the labelled rows: all the confusion matrix needs
    label, flagged = ImageResult.label, ImageResult.flagged
    stmt = select(
        label,
        flagged,
        func.count(),
        literal(0) if since is None else count_where(ImageResult.scored_at >= since),
    ).where(ImageResult.job_id == job_id, ImageResult.status == "scored")
    if since is None:
        stmt = stmt.where(label.is_not(None))
    return [tuple(row) for row in session.execute(stmt.group_by(label, flagged))]


def _matrix(groups: list[tuple[Any, ...]]) -> tuple[int, int, int, int]:
    cells = {(label, bool(flagged)): int(n) for label, flagged, n, _ in groups if label is not None}
    tp, fp = cells.get((1, True), 0), cells.get((0, True), 0)
    return tp, fp, cells.get((0, False), 0), cells.get((1, False), 0)


def job_confusion_from_results(*, session: Session, job_id: int) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn) over the job's scored images that have a label, counted from the image rows."""
    return _matrix(_scored_groups(session, job_id))


def finish_job_if_complete(*, session: Session, job_id: int) -> bool:
    """Finish a running job whose batches are all settled; True only for the caller that did it.

    One conditional UPDATE (status 'running' and no batch queued or running) makes the
    transition, so of two last batches finishing at once exactly one wins. Call it in a new
    transaction after committing your own batch. The job ends failed when any batch failed.
    """
    now = utcnow()
    unsettled = (
        select(Batch.id).where(Batch.job_id == job_id, Batch.status.in_(PENDING_BATCH_STATUSES)).exists()
    )
    won = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running", ~unsettled)
        .values(status="succeeded", finished_at=now)
        .returning(Job.started_at)
    ).first()
    if won is None:
        return False
    figures = _final_figures(session, job_id, won[0], now)
    session.execute(update(Job).where(Job.id == job_id).values(figures))
    status = str(figures.get("status", "succeeded"))
    job_ended(session=session, job_id=job_id, status=status)
    if status == "succeeded":
        plan_returns(session=session, job_id=job_id)
    return True


def _final_figures(
    session: Session, job_id: int, started_at: datetime | None, now: datetime
) -> dict[str, Any]:
    groups = _scored_groups(session, job_id, started_at)
    tp, fp, tn, fn = _matrix(groups)
    figures: dict[str, Any] = {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "recall": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "images_per_second": None,
    }
    if started_at is not None and now > started_at:
        # images scored in this run only: a re-run keeps the images scored before it
        scored_this_run = sum(int(group[3]) for group in groups)
        figures["images_per_second"] = scored_this_run / (now - started_at).total_seconds()
    batches = session.execute(
        select(func.count(), count_where(Batch.status == "failed")).where(Batch.job_id == job_id)
    ).one()
    if batches[1]:
        reason = session.scalars(
            select(Batch.error)
            .where(Batch.job_id == job_id, Batch.status == "failed")
            .order_by(Batch.index)
            .limit(1)
        ).first()
        figures.update(status="failed", error=f"{batches[1]} of {batches[0]} batches failed: {reason}")
    return figures
