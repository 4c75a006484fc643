"""A job's life in SQL: submit (idempotently), plan, fail, cancel, re-run its failed images.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
    ACTIVE_JOB_STATUSES,
    PENDING_BATCH_STATUSES,
    Batch,
    ImageResult,
    Job,
    Series,
    utcnow,
)
from db.notifications import job_ended
from db.progress import finish_job_if_complete

FINISHED_JOB_STATUSES = ("succeeded", "failed", "cancelled")
MATRIX = ("tp", "fp", "tn", "fn")  # a column named fn cannot be a keyword argument of .values()


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose jobs a caller sees: its own (`owner`, the submitted_by it submits as) and its team's."""

    owner: str
    team: str | None = None

    def condition(self) -> Any:
        """The SQL condition on Job for the jobs this viewer may see."""
        mine = Job.submitted_by == self.owner
        return or_(mine, Job.team == self.team) if self.team else mine


class KeyReused(ValueError):
    """An Idempotency-Key its submitter already used for a different request."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"this Idempotency-Key was used for a different request (job {job_id})")
        self.job_id = job_id


def create_job(
    *,
    session: Session,
    source: str,
    source_kind: str,
    source_path: str,
    submitted_by: str,
    model_version: str,
    threshold: float,
    batch_size: int,
    team: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    site_profiles: bool = False,
    priority: str = "routine",
    return_to: str | None = None,
    pull: dict[str, Any] | None = None,
) -> tuple[Job, bool]:
    """A new queued job and True, or the job this submitter's `idempotency_key` already holds and
    False; KeyReused when that job was asked for with another `request_hash`. `site_profiles`:
    each DICOM series takes its site's active profile (a job submitted without a threshold).
    `return_to`: the destinations (comma-separated names) its DICOM studies' results go to;
    `pull`: what a DICOMweb job retrieves ({"url", "studies"})."""
    if idempotency_key is not None:
        existing = _job_with_key(session, submitted_by, idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    job = Job(
        source=source,
        source_kind=source_kind,
        source_path=source_path,
        submitted_by=submitted_by,
        team=team,
        model_version=model_version,
        threshold=threshold,
        batch_size=batch_size,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        site_profiles=site_profiles,
        priority=priority,
        return_to=return_to or None,
        pull=pull,
        status="queued",
    )
    try:
        with session.begin_nested():  # a savepoint: losing the race leaves the caller's transaction usable
            session.add(job)
    except IntegrityError:
        # Another submission with the same key committed between our read and our insert.
        winner = (
            _job_with_key(session, submitted_by, idempotency_key, request_hash)
            if idempotency_key is not None
            else None
        )
        if winner is None:
            raise
        return winner, False
    return job, True


def _job_with_key(session: Session, owner: str, key: str, request_hash: str | None) -> Job | None:
    job = session.scalars(select(Job).where(Job.submitted_by == owner, Job.idempotency_key == key)).first()
    if job is not None and job.request_hash != request_hash:
        raise KeyReused(job.id)
    return job


def get_job(*, session: Session, job_id: int, viewer: Viewer | None = None) -> Job | None:
    """The job as the database has it now, or None (also when `viewer` may not see it)."""
    if viewer is None:
        return session.get(Job, job_id, populate_existing=True)
    stmt = select(Job).where(Job.id == job_id, viewer.condition()).execution_options(populate_existing=True)
    return session.scalars(stmt).first()


def list_jobs(
    *,
    session: Session,
    status: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
    viewer: Viewer | None = None,
) -> list[Job]:
    """Jobs newest first (those `viewer` may see); pass the last id seen as `before_id` for more."""
    stmt = select(Job).order_by(Job.id.desc()).limit(limit).execution_options(populate_existing=True)
    if viewer is not None:
        stmt = stmt.where(viewer.condition())
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if before_id is not None:
        stmt = stmt.where(Job.id < before_id)
    return list(session.scalars(stmt))


def unfinished_running_jobs(*, session: Session) -> list[int]:
    """Running jobs none of whose batches is queued or running: finish_job_if_complete would finish them."""
    unsettled = (
        select(Batch.id).where(Batch.job_id == Job.id, Batch.status.in_(PENDING_BATCH_STATUSES)).exists()
    )
    return list(session.scalars(select(Job.id).where(Job.status == "running", ~unsettled).order_by(Job.id)))


def stalled_jobs(*, session: Session, queued_before: datetime, planning_before: datetime) -> list[int]:
    """Jobs whose planner seems lost: queued since before `queued_before`, or planning with no
    heartbeat (planning start or a batch recorded) since before `planning_before`."""
    last_sign = func.coalesce(Job.heartbeat_at, Job.created_at)
    stmt = (
        select(Job.id)
        .where(
            or_(
                (Job.status == "queued") & (Job.created_at < queued_before),
                (Job.status == "planning") & (last_sign < planning_before),
            )
        )
        .order_by(Job.id)
    )
    return list(session.scalars(stmt))


def beat_planner(*, session: Session, job_id: int) -> bool:
    """The planner is alive (its heartbeat); False when the job is no longer being planned."""
    stmt = update(Job).where(Job.id == job_id, Job.status == "planning").values(heartbeat_at=utcnow())
    return session.execute(stmt.returning(Job.id)).first() is not None


def mark_planning(*, session: Session, job_id: int) -> bool:
    """Queued -> planning; False when the job was cancelled or is past planning.

    A job already 'planning' (its planner died and the message came back) starts planning afresh:
    the batches and series the earlier attempt recorded are deleted with their images.
    """
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(("queued", "planning")))
        .values(status="planning", heartbeat_at=utcnow())
        .returning(Job.id)
    )
    if session.execute(stmt).first() is None:
        return False
    for table in (Batch, Series):
        session.execute(
            delete(table).where(table.job_id == job_id).execution_options(synchronize_session=False)
        )
    return True


def stat_batch_ids(*, session: Session, batch_ids: Sequence[int]) -> set[int]:
    """Those of the batches whose job is `stat`: they go to the stat queue."""
    if not batch_ids:
        return set()
    rows = session.scalars(
        select(Batch.id)
        .join(Job, Job.id == Batch.job_id)
        .where(Batch.id.in_(list(batch_ids)), Job.priority == "stat")
    )
    return set(rows)


def finish_planning(*, session: Session, job_id: int, total: int, skipped: dict[str, int]) -> None:
    """Planning -> running with `total` images planned; `skipped` counts the files that held none,
    by reason. A job with no image fails, saying what the folder held: a mistyped export folder
    must not look like a clean screening.

    Batches are scored while the planner still streams, so they may all be done already: this
    then finishes the job, as the last batch would have.
    """
    now = utcnow()
    values: dict[str, object] = {
        "total": total,
        "skipped": sum(skipped.values()),
        "skipped_reasons": skipped or None,
        "planned_at": now,
    }
    if total == 0:
        values.update(status="failed", finished_at=now, error=nothing_to_screen(skipped))
    else:
        values.update(status="running")
    stmt = update(Job).where(Job.id == job_id, Job.status == "planning").values(values).returning(Job.id)
    planned = session.execute(stmt).first() is not None
    if planned and total:
        finish_job_if_complete(session=session, job_id=job_id)
    elif planned:
        job_ended(session=session, job_id=job_id, status="failed")


def nothing_to_screen(skipped: dict[str, int]) -> str:
    """Why a job found no image, in words."""
    if not skipped:
        return "the folder holds no files: nothing was screened (is it the right folder?)"
    held = "; ".join(f"{n:,} {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
    return f"the folder holds no image to screen, only other files ({held}): nothing was screened"


def fail_job(*, session: Session, job_id: int, error: str) -> bool:
    """An unfinished job -> failed with `error`; False when it had already finished."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE_JOB_STATUSES))
        .values(status="failed", error=error, finished_at=utcnow())
        .returning(Job.id)
    )
    if session.execute(stmt).first() is None:
        return False
    job_ended(session=session, job_id=job_id, status="failed")
    return True


def cancel_job(*, session: Session, job_id: int) -> bool:
    """An unfinished job -> cancelled, its queued batches with it; False when it had already finished."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE_JOB_STATUSES))
        .values(status="cancelled", finished_at=utcnow())
        .returning(Job.id)
    )
    if session.execute(stmt).first() is None:
        return False
    job_ended(session=session, job_id=job_id, status="cancelled")
    session.execute(
        update(Batch)
        .where(Batch.job_id == job_id, Batch.status == "queued")
        .values(status="cancelled", finished_at=utcnow())
    )
    return True


def rerun_failed(*, session: Session, job_id: int) -> list[int]:
    """Put a finished job's unscored images back in the queue; returns the batch ids to enqueue.

    Error images that may pass on another try go back to pending; those whose bytes are no usable
    slice (`error_permanent`) keep their error, since reading them again would fail the same way.
    Every batch that is not done or holds such a retryable error goes back to queued with its
    attempts and counts reset, and the job runs again from `rerun_at` (its final figures cleared).
    Images already scored are kept. Returns [] (and changes nothing) when there is nothing to re-run
    or the job is still running.
    """
    retryable = (
        (ImageResult.job_id == job_id)
        & (ImageResult.status == "error")
        & ImageResult.error_permanent.is_(False)
    )
    has_retryable = select(ImageResult.id).where(retryable, ImageResult.batch_id == Batch.id).exists()
    needs_rerun = (Batch.job_id == job_id) & or_(Batch.status != "done", has_retryable)
    if session.scalars(select(Batch.id).where(needs_rerun).limit(1)).first() is None:
        return []
    reopened = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(FINISHED_JOB_STATUSES))
        .values(
            {
                "status": "running",
                "started_at": None,
                "rerun_at": utcnow(),
                "finished_at": None,
                "error": None,
                **dict.fromkeys(MATRIX),
                "recall": None,
                "specificity": None,
                "images_per_second": None,
            }
        )
        .returning(Job.id)
    )
    if session.execute(reopened).first() is None:
        return []
    requeued = (
        update(Batch)
        .where(needs_rerun)
        .values(
            {
                "status": "queued",
                "attempts": 0,
                "worker": None,
                "enqueued_at": utcnow(),
                "started_at": None,
                "finished_at": None,
                "seconds": None,
                "error": None,
                "scored": 0,
                "failed": 0,
                "flagged": 0,
                **dict.fromkeys(MATRIX),
            }
        )
        .returning(Batch.id)
    )
    batch_ids = sorted(session.scalars(requeued))  # chosen before their images are reset
    session.execute(
        update(ImageResult)
        .where(retryable)
        .values(status="pending", error=None, probability=None, flagged=None, scored_at=None)
        .execution_options(synchronize_session=False)
    )
    return batch_ids
