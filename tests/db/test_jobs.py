"""A job's life: submit once per key, plan, cancel, fail, list, and re-run what failed."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.batches import claim_batch, fail_batch, finish_batch, list_batches
from db.jobs import (
    cancel_job,
    create_job,
    fail_job,
    finish_planning,
    get_job,
    list_jobs,
    mark_planning,
    rerun_failed,
    stalled_jobs,
    unfinished_running_jobs,
)
from db.models import Batch, ImageResult, Job, utcnow
from db.progress import finish_job_if_complete, job_confusion_from_results
from db.results import ScoredImage, pending_images, permanent_errors, record_results
from tests.dbfixtures import create_random_job, plan_random_images, score_randomly

Maker = sessionmaker[Session]


def _submit(session: Session, key: str | None) -> tuple[Job, bool]:
    return create_job(
        session=session,
        source="ward-7",
        source_kind="folder",
        source_path="/archive/ward-7",
        submitted_by="dr-a",
        model_version="v1",
        threshold=0.3,
        batch_size=256,
        idempotency_key=key,
    )


def test_a_repeated_submission_with_the_same_key_returns_the_same_job(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        first, created = _submit(session, "abc")
        assert created and first.status == "queued" and first.total == 0
    with db_sessionmaker.begin() as session:
        again, created_again = _submit(session, "abc")
        other, created_other = _submit(session, None)
    assert (again.id, created_again) == (first.id, False)
    assert created_other and other.id != first.id


def test_jobs_are_listed_newest_first_a_page_at_a_time(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        ids = [create_random_job(session=session).id for _ in range(7)]
        cancel_job(session=session, job_id=ids[2])
    with db_sessionmaker() as session:
        pages, before = [], None
        while page := list_jobs(session=session, limit=3, before_id=before):
            pages.append([job.id for job in page])
            before = page[-1].id
        assert pages == [ids[:3:-1], ids[3:0:-1], ids[:1]]
        assert [job.id for job in list_jobs(session=session, status="cancelled")] == [ids[2]]


def test_planning_moves_a_queued_job_to_running_with_its_counts(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        assert mark_planning(session=session, job_id=job.id)
        plan_random_images(session=session, job_id=job.id, count=10, batch_size=4)
        finish_planning(
            session=session, job_id=job.id, total=10, skipped={"not an image file (by its name)": 2}
        )
    with db_sessionmaker() as session:
        found = get_job(session=session, job_id=job.id)
        assert found is not None and (found.status, found.total, found.skipped) == ("running", 10, 2)
        assert found.planned_at is not None and found.finished_at is None


def test_a_job_with_nothing_to_score_fails_at_once_saying_why(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        finish_planning(
            session=session, job_id=job.id, total=0, skipped={"not an image file (by its name)": 5}
        )
    with db_sessionmaker() as session:
        found = get_job(session=session, job_id=job.id)
        assert found is not None and (found.status, found.total, found.skipped) == ("failed", 0, 5)
        assert "5 not an image file" in (found.error or "") and found.finished_at is not None


def test_a_job_whose_batches_all_finished_during_planning_finishes_with_it(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        (batch_id,) = plan_random_images(session=session, job_id=job.id, count=4, batch_size=4)
    with db_sessionmaker.begin() as session:  # a worker scores the batch before planning ends
        claim_batch(session=session, batch_id=batch_id, worker="w")
        score_randomly(session=session, job_id=job.id, batch_id=batch_id, rng=random.Random(1), error_rate=0)
        finish_batch(session=session, batch_id=batch_id, seconds=0.5)
    with db_sessionmaker.begin() as session:
        assert not finish_job_if_complete(session=session, job_id=job.id)  # still planning
        finish_planning(session=session, job_id=job.id, total=4, skipped={})
    with db_sessionmaker() as session:
        found = get_job(session=session, job_id=job.id)
        assert found is not None and found.status == "succeeded" and found.tp is not None


def test_a_replanned_job_starts_from_no_batches(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        plan_random_images(session=session, job_id=job.id, count=10, batch_size=4)
    with db_sessionmaker.begin() as session:  # the planner died; its message comes back
        assert mark_planning(session=session, job_id=job.id)
        assert list_batches(session=session, job_id=job.id) == []
        assert session.scalar(select(func.count()).select_from(ImageResult)) == 0


def test_cancelling_stops_queued_batches_and_happens_once(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        first, second = plan_random_images(session=session, job_id=job.id, count=8, batch_size=4)
        finish_planning(session=session, job_id=job.id, total=8, skipped={})
        claim_batch(session=session, batch_id=first, worker="w")
    with db_sessionmaker.begin() as session:
        assert cancel_job(session=session, job_id=job.id)
        assert not cancel_job(session=session, job_id=job.id)
        assert not mark_planning(session=session, job_id=job.id)
        assert claim_batch(session=session, batch_id=second, worker="w") is None
        statuses = [b.status for b in list_batches(session=session, job_id=job.id)]
    assert statuses == ["running", "cancelled"]


def test_failing_a_job_records_why_and_only_while_it_is_unfinished(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        assert fail_job(session=session, job_id=job.id, error="source folder vanished")
        assert not fail_job(session=session, job_id=job.id, error="again")
    with db_sessionmaker() as session:
        found = get_job(session=session, job_id=job.id)
        assert found is not None and (found.status, found.error) == ("failed", "source folder vanished")


def _failed_job(maker: Maker) -> tuple[int, list[int]]:
    """A finished job: batch 0 clean, batch 1 with two unreadable images, batch 2 failed outright."""
    with maker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        batch_ids = plan_random_images(session=session, job_id=job.id, count=12, batch_size=4)
        finish_planning(session=session, job_id=job.id, total=12, skipped={})
        for n, batch_id in enumerate(batch_ids):
            claim_batch(session=session, batch_id=batch_id, worker="w")
            images = pending_images(session=session, batch_id=batch_id)
            if n == 2:
                fail_batch(session=session, batch_id=batch_id, error="worker lost three times")
                continue
            record_results(
                session=session,
                job_id=job.id,
                batch_id=batch_id,
                results=[
                    ScoredImage(i.relpath, None, None, error="truncated")
                    if n == 1 and k < 2
                    else ScoredImage(i.relpath, 0.9, True)
                    for k, i in enumerate(images)
                ],
            )
            finish_batch(session=session, batch_id=batch_id, seconds=1.0)
        finish_job_if_complete(session=session, job_id=job.id)
    return job.id, batch_ids


def test_rerunning_a_failed_job_requeues_only_what_did_not_score(db_sessionmaker: Maker) -> None:
    job_id, batch_ids = _failed_job(db_sessionmaker)
    with db_sessionmaker.begin() as session:
        job = get_job(session=session, job_id=job_id)
        assert job is not None and job.status == "failed"
        assert job.error == "1 of 3 batches failed: worker lost three times"
        assert rerun_failed(session=session, job_id=job_id) == batch_ids[1:]
        assert rerun_failed(session=session, job_id=job_id) == []  # running now: nothing more to do
    with db_sessionmaker.begin() as session:
        job = get_job(session=session, job_id=job_id)
        assert job is not None and (job.status, job.error, job.tp) == ("running", None, None)
        assert job.finished_at is None
        batches = list_batches(session=session, job_id=job_id)
        assert [(b.status, b.attempts) for b in batches] == [("done", 1), ("queued", 0), ("queued", 0)]
        assert [len(pending_images(session=session, batch_id=b)) for b in batch_ids] == [0, 2, 4]
        for batch_id in batch_ids[1:]:
            claim_batch(session=session, batch_id=batch_id, worker="w2")
            score_randomly(
                session=session, job_id=job_id, batch_id=batch_id, rng=random.Random(3), error_rate=0
            )
            finish_batch(session=session, batch_id=batch_id, seconds=1.0)
    with db_sessionmaker.begin() as session:
        assert finish_job_if_complete(session=session, job_id=job_id)
        job = get_job(session=session, job_id=job_id)
        assert job is not None and job.status == "succeeded"
        assert (job.tp, job.fp, job.tn, job.fn) == job_confusion_from_results(session=session, job_id=job_id)
        assert session.scalar(select(func.count()).where(ImageResult.status == "scored")) == 12


def test_a_rerun_leaves_images_that_are_no_slice_and_counts_time_from_itself(db_sessionmaker: Maker) -> None:
    """Bytes that are no usable slice fail the same way every time: a re-run does not send them
    again (a batch holding only those stays done); a missing file may be back, so it is retried."""
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        batch_ids = plan_random_images(session=session, job_id=job.id, count=8, batch_size=4)
        retried = ""
        finish_planning(session=session, job_id=job.id, total=8, skipped={})
        for batch_id in batch_ids:
            claim_batch(session=session, batch_id=batch_id, worker="w")
            images = pending_images(session=session, batch_id=batch_id)
            results = [ScoredImage(i.relpath, 0.2, False) for i in images[2:]]
            results.append(ScoredImage(images[0].relpath, None, None, "corrupt data", error_permanent=True))
            missing = batch_id == batch_ids[0]  # the other batch's second error is no slice either
            reason = "file not found" if missing else "not a recognised image format"
            results.append(ScoredImage(images[1].relpath, None, None, reason, error_permanent=not missing))
            retried = images[1].relpath if missing else retried
            record_results(session=session, job_id=job.id, batch_id=batch_id, results=results)
            finish_batch(session=session, batch_id=batch_id, seconds=1.0)
        finish_job_if_complete(session=session, job_id=job.id)
        session.execute(update(Job).values(created_at=utcnow() - timedelta(days=2)))
    with db_sessionmaker.begin() as session:
        assert permanent_errors(session=session, job_id=job.id) == 3
        assert rerun_failed(session=session, job_id=job.id) == batch_ids[:1]
    with db_sessionmaker.begin() as session:
        rerun = get_job(session=session, job_id=job.id)
        assert rerun is not None and rerun.rerun_at is not None and rerun.started_at is None
        assert utcnow() - rerun.rerun_at < timedelta(minutes=1)
        assert [b.status for b in list_batches(session=session, job_id=job.id)] == ["queued", "done"]
        statuses = session.execute(
            select(ImageResult.status, ImageResult.error_permanent, func.count())
            .group_by(ImageResult.status, ImageResult.error_permanent)
            .order_by(ImageResult.status, ImageResult.error_permanent)
        ).all()
        assert statuses == [("error", True, 3), ("pending", False, 1), ("scored", False, 4)]
        claim_batch(session=session, batch_id=batch_ids[0], worker="w2")
        assert [i.relpath for i in pending_images(session=session, batch_id=batch_ids[0])] == [retried]
        results = [ScoredImage(retried, 0.9, True)]
        record_results(session=session, job_id=job.id, batch_id=batch_ids[0], results=results)
        finish_batch(session=session, batch_id=batch_ids[0], seconds=1.0)
        assert finish_job_if_complete(session=session, job_id=job.id)
    with db_sessionmaker.begin() as session:
        done = get_job(session=session, job_id=job.id)
        assert done is not None and done.status == "succeeded"
        assert [b.failed for b in list_batches(session=session, job_id=job.id)] == [1, 2]
        assert rerun_failed(session=session, job_id=job.id) == []  # only bytes that are no slice are left


def test_rerunning_a_clean_job_changes_nothing(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        (batch_id,) = plan_random_images(session=session, job_id=job.id, count=4, batch_size=4)
        finish_planning(session=session, job_id=job.id, total=4, skipped={})
        claim_batch(session=session, batch_id=batch_id, worker="w")
        score_randomly(session=session, job_id=job.id, batch_id=batch_id, rng=random.Random(2), error_rate=0)
        finish_batch(session=session, batch_id=batch_id, seconds=1.0)
        finish_job_if_complete(session=session, job_id=job.id)
    with db_sessionmaker.begin() as session:
        assert rerun_failed(session=session, job_id=job.id) == []
        assert session.scalar(select(Job.status)) == "succeeded"
        assert session.scalar(select(Batch.status)) == "done"


def test_the_watchdog_finds_jobs_whose_planner_or_finisher_was_lost(db_sessionmaker: Maker) -> None:
    hour_ago = utcnow() - timedelta(hours=1)
    with db_sessionmaker.begin() as session:
        lost_queued, fresh_queued, lost_planning, busy_planning, settled, busy = (
            create_random_job(session=session).id for _ in range(6)
        )
        session.execute(update(Job).values(created_at=hour_ago).where(Job.id != fresh_queued))
        for job_id in (lost_planning, busy_planning, settled, busy):
            mark_planning(session=session, job_id=job_id)
        for job_id in (lost_planning, busy_planning, settled, busy):
            plan_random_images(session=session, job_id=job_id, count=4, batch_size=4)
        session.execute(update(Job).values(heartbeat_at=hour_ago).where(Job.id == lost_planning))
        for job_id in (settled, busy):
            finish_planning(session=session, job_id=job_id, total=4, skipped={})
        (batch_id,) = [b.id for b in list_batches(session=session, job_id=settled)]
        claim_batch(session=session, batch_id=batch_id, worker="w")
        score_randomly(session=session, job_id=settled, batch_id=batch_id, rng=random.Random(1))
        finish_batch(session=session, batch_id=batch_id, seconds=1.0)
    ten_minutes_ago = utcnow() - timedelta(minutes=10)
    with db_sessionmaker() as session:
        assert stalled_jobs(
            session=session, queued_before=ten_minutes_ago, planning_before=ten_minutes_ago
        ) == [lost_queued, lost_planning]
        assert unfinished_running_jobs(session=session) == [settled]
