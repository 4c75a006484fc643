"""The watchdog as a function: it resends what a lost message or a dead worker stranded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from brainscan.testing import Service
from db.batches import claim_batch, list_batches
from db.jobs import create_job
from db.models import Batch, Job, utcnow
from tests.images import create_random_slice, save_image
from worker.celery_app import PLAN_QUEUE, SCORE_QUEUE, celery_for
from worker.enqueue import queue_depth
from worker.watchdog import LOST_WORKER, sweep


def _job(service: Service, tmp_path: Path, images: int = 6, batch_size: int = 2) -> int:
    for i in range(images):
        save_image(tmp_path / "src" / "yes" / f"{i}.png", create_random_slice(48, seed=i))
    with service.sessions().begin() as session:
        job, _ = create_job(
            session=session,
            source="src",
            source_kind="folder",
            source_path=str(tmp_path / "src"),
            submitted_by="t",
            model_version="m",
            threshold=0.5,
            batch_size=batch_size,
        )
        return job.id


def _age(service: Service, minutes: int, *conditions: object, table: type = Batch, **values: object) -> None:
    past = utcnow() - timedelta(minutes=minutes)
    with service.sessions().begin() as session:
        session.execute(update(table).where(*conditions).values({k: past for k in values}))


def test_lost_queued_batches_and_abandoned_running_ones_are_sent_again(
    embedded: Service, tmp_path: Path
) -> None:
    app = celery_for(embedded.settings)
    job_id = _job(embedded, tmp_path)
    embedded.plan(job_id, enqueue=lambda ids: None)  # messages "lost"
    with embedded.sessions().begin() as session:
        first, second, third = [b.id for b in list_batches(session=session, job_id=job_id)]
        claim_batch(session=session, batch_id=first, worker="dead:1:t")
    _age(embedded, 30, Batch.job_id == job_id, enqueued_at=True, started_at=True, lease_until=True)
    assert queue_depth(app, SCORE_QUEUE) == 0
    report = sweep(app=app, sessions=embedded.sessions(), settings=embedded.settings)
    assert sorted(report.resent_batches) == [first, second, third]
    assert queue_depth(app, SCORE_QUEUE) == 3
    again = sweep(app=app, sessions=embedded.sessions(), settings=embedded.settings)
    assert not again.resent_batches  # fresh again, and the queue is no longer empty


def test_a_batch_abandoned_too_often_fails_and_the_job_ends(embedded: Service, tmp_path: Path) -> None:
    app = celery_for(embedded.settings)
    job_id = _job(embedded, tmp_path, images=2)
    embedded.plan(job_id, enqueue=lambda ids: None)
    with embedded.sessions().begin() as session:
        (batch_id,) = [b.id for b in list_batches(session=session, job_id=job_id)]
        claim_batch(session=session, batch_id=batch_id, worker="dead:1:t")
        session.execute(update(Batch).where(Batch.id == batch_id).values(attempts=3))
    _age(embedded, 30, Batch.id == batch_id, started_at=True, lease_until=True)
    report = sweep(app=app, sessions=embedded.sessions(), settings=embedded.settings)
    assert report.failed_batches == [batch_id]
    job = embedded.job(job_id)
    assert job.status == "failed" and "gave up after 3 attempts" in (job.error or "")


def test_a_job_whose_plan_message_was_lost_is_submitted_again(embedded: Service, tmp_path: Path) -> None:
    app = celery_for(embedded.settings)
    job_id = _job(embedded, tmp_path)
    _age(embedded, 30, Job.id == job_id, table=Job, created_at=True)
    assert queue_depth(app, PLAN_QUEUE) == 0
    report = sweep(app=app, sessions=embedded.sessions(), settings=embedded.settings)
    assert report.resent_jobs == [job_id] and queue_depth(app, PLAN_QUEUE) == 1


def test_a_lapsed_lease_is_taken_back_at_once_and_a_renewed_one_never(
    embedded: Service, tmp_path: Path
) -> None:
    """Long before any time limit: a batch whose worker stopped renewing its lease is sent again at
    the next sweep; one whose worker renews it stays with that worker, however long it runs."""
    from db.batches import renew_lease

    app = celery_for(embedded.settings)
    job_id = _job(embedded, tmp_path, images=8, batch_size=4)
    embedded.plan(job_id, enqueue=lambda ids: None)
    with embedded.sessions().begin() as session:
        dead, alive = [b.id for b in list_batches(session=session, job_id=job_id)]
        claim_batch(session=session, batch_id=dead, worker="dead:1:t", lease=3)
        claim_batch(session=session, batch_id=alive, worker="alive:1:u", lease=3)
    _age(embedded, 30, Batch.id == alive, started_at=True)  # running for half an hour, still renewing
    _age(embedded, 1, Batch.id == dead, lease_until=True)  # its worker stopped a minute ago
    with embedded.sessions().begin() as session:
        assert renew_lease(session=session, batch_id=alive, worker="alive:1:u", lease=3)
        assert not renew_lease(session=session, batch_id=alive, worker="someone:2:v", lease=3)
    report = sweep(app=app, sessions=embedded.sessions(), settings=embedded.settings)
    assert report.resent_batches == [dead]
    with embedded.sessions()() as session:
        batches = {b.id: b for b in list_batches(session=session, job_id=job_id)}
    assert (batches[dead].status, batches[alive].status) == ("queued", "running")
    assert batches[dead].requeued_because == LOST_WORKER and batches[alive].requeued_because is None
