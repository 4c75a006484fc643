"""Batches: recorded in bulk, claimed once, re-queued by the watchdog, finished or failed from their rows."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.batches import (
    PlannedImage,
    add_batch,
    claim_batch,
    fail_batch,
    finish_batch,
    hand_back_batches,
    list_batches,
    reclaim_batch,
    requeue_batch,
    stale_queued_batches,
    stale_running_batches,
)
from db.jobs import cancel_job, finish_planning, get_job, mark_planning
from db.models import Batch, ImageResult, utcnow
from db.results import ScoredImage, record_results
from tests.dbfixtures import create_random_job, plan_random_images, score_randomly

Maker = sessionmaker[Session]


def _running_job(maker: Maker, images: int = 8, batch_size: int = 4) -> tuple[int, list[int]]:
    with maker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        batch_ids = plan_random_images(session=session, job_id=job.id, count=images, batch_size=batch_size)
        finish_planning(session=session, job_id=job.id, total=images, skipped={})
    return job.id, batch_ids


def test_a_batch_and_its_images_are_recorded_queued_and_pending(db_sessionmaker: Maker) -> None:
    images = [PlannedImage("yes/Y1.jpg", 1234, 1), PlannedImage("no/N1.jpg", 99, 0), PlannedImage("x.dcm", 5)]
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        batch_id = add_batch(session=session, job_id=job.id, index=0, images=images)
    with db_sessionmaker() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        assert (batch.status, batch.size, batch.attempts, batch.index) == ("queued", 3, 0, 0)
        rows = session.execute(
            select(
                ImageResult.relpath, ImageResult.size_bytes, ImageResult.label, ImageResult.status
            ).order_by(ImageResult.id)
        ).all()
        assert [tuple(r) for r in rows] == [(i.relpath, i.size_bytes, i.label, "pending") for i in images]


def test_claiming_runs_a_queued_batch_once_and_starts_the_job_clock_once(db_sessionmaker: Maker) -> None:
    job_id, (first, second) = _running_job(db_sessionmaker)
    with db_sessionmaker.begin() as session:
        batch = claim_batch(session=session, batch_id=first, worker="host-a:41")
        assert batch is not None
        assert (batch.status, batch.attempts, batch.worker) == ("running", 1, "host-a:41")
        assert claim_batch(session=session, batch_id=first, worker="host-b:7") is None
        job = get_job(session=session, job_id=job_id)
        assert job is not None and job.started_at == batch.started_at
    with db_sessionmaker.begin() as session:
        claim_batch(session=session, batch_id=second, worker="host-b:7")
        job = get_job(session=session, job_id=job_id)
        assert job is not None and job.started_at == batch.started_at
        assert claim_batch(session=session, batch_id=999, worker="w") is None


def test_a_redelivered_done_batch_is_not_claimed_again(db_sessionmaker: Maker) -> None:
    job_id, (first, _) = _running_job(db_sessionmaker)
    with db_sessionmaker.begin() as session:
        claim_batch(session=session, batch_id=first, worker="w")
        score_randomly(session=session, job_id=job_id, batch_id=first, rng=random.Random(1))
        finish_batch(session=session, batch_id=first, seconds=1.0)
    with db_sessionmaker.begin() as session:
        assert claim_batch(session=session, batch_id=first, worker="w") is None


def test_a_requeued_batch_is_claimed_again_with_one_more_attempt(db_sessionmaker: Maker) -> None:
    _, (first, _) = _running_job(db_sessionmaker)
    with db_sessionmaker.begin() as session:
        claim_batch(session=session, batch_id=first, worker="w")
        assert requeue_batch(session=session, batch_id=first, because="test")
        batch = claim_batch(session=session, batch_id=first, worker="w2")
        assert batch is not None and batch.attempts == 2
        finish_batch(session=session, batch_id=first, seconds=1.0)
        assert not requeue_batch(session=session, batch_id=first, because="test")


def test_the_watchdog_sees_stale_batches_of_live_jobs_only(db_sessionmaker: Maker) -> None:
    _, (first, second) = _running_job(db_sessionmaker)
    cancelled_job, (orphan, _) = _running_job(db_sessionmaker)
    now = utcnow()
    with db_sessionmaker.begin() as session:
        claim_batch(session=session, batch_id=first, worker="w")
        claim_batch(session=session, batch_id=orphan, worker="w")
        session.execute(
            update(Batch).values(
                started_at=now - timedelta(hours=1), enqueued_at=now - timedelta(hours=1), lease_until=None
            )
        )  # claimed before leases: judged by age
        cancel_job(session=session, job_id=cancelled_job)
    with db_sessionmaker() as session:
        assert stale_running_batches(session=session, started_before=now - timedelta(minutes=10)) == [first]
        assert stale_queued_batches(session=session, enqueued_before=now - timedelta(minutes=10)) == [second]
        assert stale_running_batches(session=session, started_before=now - timedelta(hours=2)) == []
        assert stale_queued_batches(session=session, enqueued_before=now - timedelta(hours=2)) == []


def test_finishing_a_batch_counts_its_rows_and_a_second_finish_is_ignored(db_sessionmaker: Maker) -> None:
    job_id, (first,) = _running_job(db_sessionmaker, images=32, batch_size=32)
    with db_sessionmaker.begin() as session:
        labels = {r.relpath: r.label for r in session.scalars(select(ImageResult))}
        claim_batch(session=session, batch_id=first, worker="w")
        results = score_randomly(
            session=session, job_id=job_id, batch_id=first, rng=random.Random(5), error_rate=0.25
        )
        finish_batch(session=session, batch_id=first, seconds=2.5)
    expected = _brute_force(results, labels)
    with db_sessionmaker.begin() as session:
        (batch,) = list_batches(session=session, job_id=job_id)
        assert _counts(batch) == expected and (batch.status, batch.seconds) == ("done", 2.5)
        finish_batch(session=session, batch_id=first, seconds=9.0)
        (again,) = list_batches(session=session, job_id=job_id)
        assert (again.seconds, again.finished_at, _counts(again)) == (2.5, batch.finished_at, expected)


def _counts(batch: Batch) -> tuple[int | None, ...]:
    return (batch.scored, batch.failed, batch.flagged, batch.tp, batch.fp, batch.tn, batch.fn)


def _brute_force(results: list[ScoredImage], labels: dict[str, int | None]) -> tuple[int, ...]:
    scored = [r for r in results if r.error is None]

    def cell(label: int, flag: bool) -> int:
        return sum(1 for r in scored if labels[r.relpath] == label and r.flagged is flag)

    return (
        len(scored),
        len(results) - len(scored),
        sum(1 for r in scored if r.flagged),
        cell(1, True),
        cell(0, True),
        cell(0, False),
        cell(1, False),
    )


def test_failing_a_batch_marks_its_unscored_images_with_the_reason(db_sessionmaker: Maker) -> None:
    job_id, (first,) = _running_job(db_sessionmaker, images=4, batch_size=4)
    with db_sessionmaker.begin() as session:
        claim_batch(session=session, batch_id=first, worker="w")
        record_results(
            session=session,
            job_id=job_id,
            batch_id=first,
            results=[ScoredImage("scan-000000.png", 0.9, True)],
        )
        fail_batch(session=session, batch_id=first, error="time limit exceeded 3 times")
        fail_batch(session=session, batch_id=first, error="a later reason is ignored")
    with db_sessionmaker() as session:
        rows = session.execute(select(ImageResult.status, ImageResult.error).order_by(ImageResult.id)).all()
        assert [tuple(r) for r in rows] == [("scored", None)] + [("error", "time limit exceeded 3 times")] * 3
        (batch,) = list_batches(session=session, job_id=job_id)
        assert (batch.status, batch.error, batch.scored, batch.failed) == (
            "failed",
            "time limit exceeded 3 times",
            1,
            3,
        )


def test_a_done_batch_cannot_be_failed(db_sessionmaker: Maker) -> None:
    job_id, (first, _) = _running_job(db_sessionmaker)
    with db_sessionmaker.begin() as session:
        claim_batch(session=session, batch_id=first, worker="w")
        score_randomly(session=session, job_id=job_id, batch_id=first, rng=random.Random(1), error_rate=0)
        finish_batch(session=session, batch_id=first, seconds=1.0)
        fail_batch(session=session, batch_id=first, error="late watchdog")
        assert list_batches(session=session, job_id=job_id)[0].status == "done"


def test_a_retried_task_takes_its_own_running_batch_back(db_sessionmaker: Maker) -> None:
    job_id, (first, _) = _running_job(db_sessionmaker)
    with db_sessionmaker.begin() as session:
        assert reclaim_batch(session=session, batch_id=first, worker="host:1:task-a") is None  # not running
        claim_batch(session=session, batch_id=first, worker="host:1:task-a")
        assert reclaim_batch(session=session, batch_id=first, worker="host:2:task-b") is None
        batch = reclaim_batch(session=session, batch_id=first, worker="host:1:task-a")
        assert batch is not None and (batch.status, batch.attempts) == ("running", 2)
        cancel_job(session=session, job_id=job_id)
        assert reclaim_batch(session=session, batch_id=first, worker="host:1:task-a") is None


def test_a_finished_batch_keeps_its_score_histogram(db_sessionmaker: Maker) -> None:
    """The SQL histogram (both dialects) bins scores as training.drift does, 1.0 in the last bin."""
    from db.batches import SCORE_BINS
    from training.drift import BINS, histogram

    job_id, (batch_id,) = _running_job(db_sessionmaker, images=200, batch_size=200)
    with db_sessionmaker.begin() as session:
        pending = session.scalars(select(ImageResult.relpath).where(ImageResult.batch_id == batch_id)).all()
        probs = [random.Random(i).random() for i in range(len(pending) - 2)] + [1.0, 0.0]
        record_results(
            session=session,
            job_id=job_id,
            batch_id=batch_id,
            results=[ScoredImage(path, p, p >= 0.5) for path, p in zip(pending, probs, strict=True)],
        )
        finish_batch(session=session, batch_id=batch_id, seconds=1.0)
    with db_sessionmaker() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
    assert SCORE_BINS == BINS and batch.score_histogram == histogram(probs)


def test_a_worker_shut_down_hands_back_its_own_batches_without_spending_an_attempt(
    db_sessionmaker: Maker,
) -> None:
    _, (mine, also_mine, theirs, _queued) = _running_job(db_sessionmaker, images=16, batch_size=4)
    with db_sessionmaker.begin() as session:
        claim_batch(session=session, batch_id=mine, worker="brainscan-7@host:101:task-a")
        claim_batch(session=session, batch_id=also_mine, worker="brainscan-7@host:102:task-b")
        claim_batch(session=session, batch_id=theirs, worker="brainscan-70@host:103:task-c")
    with db_sessionmaker.begin() as session:
        handed = hand_back_batches(session=session, holder_prefix="brainscan-7@host:", because="shut down")
    assert handed == [mine, also_mine]
    with db_sessionmaker() as session:
        batches = {
            b.id: b for b in session.scalars(select(Batch).where(Batch.id.in_([mine, also_mine, theirs])))
        }
    assert [
        (b.status, b.attempts, b.worker, b.requeued_because) for b in (batches[mine], batches[also_mine])
    ] == [("queued", 0, None, "shut down")] * 2
    assert (batches[theirs].status, batches[theirs].attempts) == ("running", 1)
    with db_sessionmaker.begin() as session:  # the next worker's claim is its first attempt
        assert claim_batch(session=session, batch_id=mine, worker="other@host:1:t").attempts == 1
