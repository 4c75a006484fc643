"""Batches: planned in bulk, claimed by one worker, finished with counts computed from their images.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, func, insert, select, update
from sqlalchemy.orm import Session

from db.bulk import insert_pending
from db.models import PENDING_BATCH_STATUSES, Batch, ImageResult, Job, utcnow
from db.progress import count_where

LIVE_JOB_STATUSES = ("planning", "running")  # batches of other jobs are never claimed or re-queued


@dataclass(frozen=True, slots=True)
class PlannedImage:
    """One image found by the planner: path relative to the job's source, size, label if known;
    for DICOM its series (a `db.series` row), place in it, and frame (0: a single-frame file)."""

    relpath: str
    size_bytes: int
    label: int | None = None
    series_id: int | None = None
    instance_number: int | None = None
    frame: int = 0


def add_batch(*, session: Session, job_id: int, index: int, images: Sequence[PlannedImage]) -> int:
    """Record a queued batch and its pending image rows in bulk; returns the batch id.

    Also the planner's heartbeat: the watchdog leaves a job alone while batches keep coming.
    """
    now = utcnow()
    batch_id = session.execute(
        insert(Batch)
        .values(job_id=job_id, index=index, size=len(images), status="queued", enqueued_at=now)
        .returning(Batch.id)
    ).scalar_one()
    session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=now))
    if images:
        rows = [
            {
                "relpath": i.relpath,
                "frame": i.frame,
                "size_bytes": i.size_bytes,
                "label": i.label,
                "series_id": i.series_id,
                "instance_number": i.instance_number,
            }
            for i in images
        ]
        insert_pending(session, job_id=job_id, batch_id=batch_id, rows=rows)
    return batch_id


DEFAULT_LEASE = 15.0  # seconds a claim holds a batch unless its worker renews it (settings.batch_lease)


def claim_batch(
    *, session: Session, batch_id: int, worker: str, lease: float = DEFAULT_LEASE
) -> Batch | None:
    """Queued -> running for `worker`, held for `lease` seconds (the worker renews the lease while it
    works: `renew_lease`); None when the batch is not queued or its job is not live."""
    now = utcnow()
    live_job = select(Job.id).where(Job.id == Batch.job_id, Job.status.in_(LIVE_JOB_STATUSES)).exists()
    claimed = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == "queued", live_job)
        .values(
            status="running",
            attempts=Batch.attempts + 1,
            worker=worker,
            started_at=now,
            lease_until=now + timedelta(seconds=lease),
            finished_at=None,
            error=None,
        )
        .returning(Batch.job_id)
    ).first()
    if claimed is None:
        return None
    session.execute(update(Job).where(Job.id == claimed[0], Job.started_at.is_(None)).values(started_at=now))
    return session.get(Batch, batch_id, populate_existing=True)


def reclaim_batch(
    *, session: Session, batch_id: int, worker: str, lease: float = DEFAULT_LEASE
) -> Batch | None:
    """Take back a batch still running under the same task: a retry or re-delivery of its message.

    Worker names end in ':<task id>' (host:pid:task); a retry keeps the task id but may run in
    another process, so only that part must match. Counts one more attempt and restarts the clock;
    None when the batch is not running under that task or its job is not live.
    """
    task_id = worker.rsplit(":", 1)[-1]
    live_job = select(Job.id).where(Job.id == Batch.job_id, Job.status.in_(LIVE_JOB_STATUSES)).exists()
    same_task = Batch.worker.endswith(f":{task_id}", autoescape=True)
    reclaimed = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == "running", same_task, live_job)
        .values(
            attempts=Batch.attempts + 1,
            started_at=utcnow(),
            lease_until=utcnow() + timedelta(seconds=lease),
            worker=worker,
        )
        .returning(Batch.id)
    ).first()
    return None if reclaimed is None else session.get(Batch, batch_id, populate_existing=True)


def renew_lease(*, session: Session, batch_id: int, worker: str, lease: float) -> bool:
    """Hold the batch `lease` more seconds; False when `worker` no longer holds it (it was taken
    back after its lease lapsed, or finished)."""
    renewed = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == "running", Batch.worker == worker)
        .values(lease_until=utcnow() + timedelta(seconds=lease))
        .returning(Batch.id)
    ).first()
    return renewed is not None


def _image_counts(session: Session, batch_id: int) -> dict[str, int | None]:
    scored = ImageResult.status == "scored"
    positive, negative = and_(scored, ImageResult.label == 1), and_(scored, ImageResult.label == 0)
    flagged, unflagged = ImageResult.flagged.is_(True), ImageResult.flagged.is_(False)
    row = session.execute(
        select(
            count_where(scored),
            count_where(ImageResult.status == "error"),
            count_where(and_(scored, flagged)),
            count_where(and_(positive, flagged)),
            count_where(and_(negative, flagged)),
            count_where(and_(negative, unflagged)),
            count_where(and_(positive, unflagged)),
            count_where(and_(scored, ImageResult.out_of_distribution.is_(True))),
            count_where(and_(scored, ImageResult.out_of_distribution.is_not(None))),
        ).where(ImageResult.batch_id == batch_id)
    ).one()
    names = ("scored", "failed", "flagged", "tp", "fp", "tn", "fn", "out_of_distribution")
    counts = dict(zip(names, map(int, row[:-1]), strict=True))
    measured = int(row[-1])
    return {**counts, "out_of_distribution": counts["out_of_distribution"] if measured else None}


SCORE_BINS = 10  # the histogram's bins of [0, 1] (= training.drift.BINS; tests/db checks)


def score_bin(session: Session) -> ColumnElement[int]:
    """An image's score bin (0 .. SCORE_BINS - 1; a score of 1.0 in the last), in SQL."""
    if session.get_bind().dialect.name == "sqlite":  # SQLite's two-argument min() is its least()
        return func.min(func.cast(ImageResult.probability * SCORE_BINS, Integer), SCORE_BINS - 1)
    return func.least(func.floor(ImageResult.probability * SCORE_BINS), SCORE_BINS - 1)


def score_histogram(session: Session, batch_id: int) -> list[int]:
    """How many of the batch's scores fall in each of SCORE_BINS equal bins of [0, 1]."""
    bin_of = score_bin(session)
    rows = session.execute(
        select(bin_of, func.count())
        .where(ImageResult.batch_id == batch_id, ImageResult.status == "scored")
        .group_by(bin_of)
    ).all()
    counts = [0] * SCORE_BINS
    for index, n in rows:
        counts[int(index)] += int(n)
    return counts


def finish_batch(*, session: Session, batch_id: int, seconds: float) -> None:
    """Mark the batch done with its counts, confusion matrix and score histogram computed from its
    image rows.

    A batch already done (or failed, or cancelled) is left as it is, so a re-delivered batch
    changes nothing.
    """
    counts = _image_counts(session, batch_id)
    done = {
        "status": "done",
        "finished_at": utcnow(),
        "seconds": seconds,
        "error": None,
        "score_histogram": score_histogram(session, batch_id),
        **counts,
    }
    session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.status.in_(PENDING_BATCH_STATUSES)).values(done)
    )


def fail_batch(*, session: Session, batch_id: int, error: str) -> None:
    """Mark the batch failed and its images not yet scored as errors with that reason."""
    failed = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(PENDING_BATCH_STATUSES))
        .values(status="failed", error=error, finished_at=utcnow())
        .returning(Batch.id)
    ).first()
    if failed is None:
        return
    unscored = (ImageResult.batch_id == batch_id) & (ImageResult.status == "pending")
    session.execute(
        update(ImageResult)
        .where(unscored)
        .values(status="error", error=error)
        .execution_options(synchronize_session=False)
    )
    counts = _image_counts(session, batch_id)
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(scored=counts["scored"], failed=counts["failed"], flagged=counts["flagged"])
    )


def _queued_again(because: str) -> dict[str, Any]:
    """The values that put a claimed batch back in the queue, saying why."""
    return {
        "status": "queued",
        "enqueued_at": utcnow(),
        "worker": None,
        "started_at": None,
        "lease_until": None,
        "requeued_because": because[:255],
    }


def requeue_batch(*, session: Session, batch_id: int, because: str) -> bool:
    """Running or queued -> queued again (watchdog, retries), saying why; False for a batch already
    settled."""
    stmt = (
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(PENDING_BATCH_STATUSES))
        .values(**_queued_again(because))
        .returning(Batch.id)
    )
    return session.execute(stmt).first() is not None


def hand_back_batches(*, session: Session, holder_prefix: str, because: str) -> list[int]:
    """Every batch running under a holder whose name starts with `holder_prefix` (one worker's
    pool processes) -> queued again, not counted as an attempt: the worker is being shut down and
    another takes the work at once. The ids, for their messages to be sent again."""
    stmt = (
        update(Batch)
        .where(Batch.status == "running", Batch.worker.startswith(holder_prefix, autoescape=True))
        .values(**_queued_again(because), attempts=Batch.attempts - 1)  # running: claimed at least once
        .returning(Batch.id)
    )
    return sorted(row[0] for row in session.execute(stmt))


def _stale(session: Session, status: str, column: Any, before: datetime, *also: Any) -> list[int]:
    stmt = (
        select(Batch.id)
        .join(Job, Job.id == Batch.job_id)
        .where(Batch.status == status, column < before, Job.status.in_(LIVE_JOB_STATUSES), *also)
        .order_by(Batch.id)
    )
    return list(session.scalars(stmt))


def stale_running_batches(*, session: Session, started_before: datetime) -> list[int]:
    """Batches of live jobs running without a lease (claimed before leases) since before
    `started_before`: their worker may be gone. A leased batch is judged by its lease alone."""
    return _stale(session, "running", Batch.started_at, started_before, Batch.lease_until.is_(None))


def lapsed_batches(*, session: Session, now: datetime) -> list[int]:
    """Running batches of live jobs whose lease ran out: their worker stopped renewing it (killed,
    frozen, cut off) and they can be taken back at once."""
    return _stale(session, "running", Batch.lease_until, now)


def stale_queued_batches(*, session: Session, enqueued_before: datetime) -> list[int]:
    """Batches of live jobs queued since before `enqueued_before` (their message may be lost)."""
    return _stale(session, "queued", Batch.enqueued_at, enqueued_before)


def list_batches(*, session: Session, job_id: int) -> list[Batch]:
    """The job's batches in planning order."""
    stmt = (
        select(Batch)
        .where(Batch.job_id == job_id)
        .order_by(Batch.index)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(stmt))


def job_score_histogram(*, session: Session, job_id: int) -> tuple[list[int], int, int | None]:
    """The job's finished batches' score histograms summed, how many of those images were flagged,
    and how many were out of distribution (None when no batch measured it: a model without an
    out-of-distribution reference)."""
    totals, flagged, beyond = [0] * SCORE_BINS, 0, None
    rows = session.execute(
        select(Batch.score_histogram, Batch.flagged, Batch.out_of_distribution).where(
            Batch.job_id == job_id, Batch.score_histogram.is_not(None)
        )
    )
    for histogram, batch_flagged, batch_beyond in rows:
        if histogram:  # batches finished before histograms were kept have none
            totals = [a + int(b) for a, b in zip(totals, histogram, strict=True)]
            flagged += int(batch_flagged or 0)
            if batch_beyond is not None:
                beyond = (beyond or 0) + int(batch_beyond)
    return totals, flagged, beyond
