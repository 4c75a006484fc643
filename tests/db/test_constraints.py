"""Constraints the pipeline relies on hold in the database itself, on SQLite as on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.audit import record_event
from db.batches import PlannedImage, add_batch
from db.models import AuditEvent, Batch, ImageResult, Job, ModelVersion
from tests.dbfixtures import create_random_job, plan_random_images


@pytest.mark.parametrize("model", [Job, Batch, ImageResult])
def test_a_status_outside_the_list_is_rejected(db_sessionmaker: sessionmaker[Session], model: type) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        plan_random_images(session=session, job_id=job.id, count=3, batch_size=3)
    with pytest.raises(IntegrityError, match=r"(?i)check"), db_sessionmaker.begin() as session:
        session.execute(update(model).values(status="exploded"))


def test_a_source_kind_outside_the_list_is_rejected(db_sessionmaker: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), db_sessionmaker.begin() as session:
        create_random_job(session=session, source_kind="carrier-pigeon")


def test_foreign_keys_are_enforced(db_sessionmaker: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"), db_sessionmaker.begin() as session:
        add_batch(session=session, job_id=999, index=0, images=[PlannedImage("a.png", 1)])


def test_one_row_per_job_and_relative_path(db_sessionmaker: sessionmaker[Session]) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        add_batch(session=session, job_id=job.id, index=0, images=[PlannedImage("a.png", 1)])
    with pytest.raises(IntegrityError), db_sessionmaker.begin() as session:
        add_batch(session=session, job_id=job.id, index=1, images=[PlannedImage("a.png", 1)])


def test_one_batch_per_job_and_index(db_sessionmaker: sessionmaker[Session]) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        add_batch(session=session, job_id=job.id, index=0, images=[PlannedImage("a.png", 1)])
    with pytest.raises(IntegrityError), db_sessionmaker.begin() as session:
        add_batch(session=session, job_id=job.id, index=0, images=[PlannedImage("b.png", 1)])


def test_one_job_per_idempotency_key_in_the_table_itself(db_sessionmaker: sessionmaker[Session]) -> None:
    row: dict[str, object] = {
        "source": "x",
        "source_kind": "folder",
        "source_path": "/x",
        "submitted_by": "t",
        "status": "queued",
        "model_version": "v",
        "threshold": 0.5,
        "batch_size": 8,
        "idempotency_key": "same",
    }
    with pytest.raises(IntegrityError), db_sessionmaker.begin() as session:
        session.execute(insert(Job), [row, row])


def test_at_most_one_current_model_version(db_sessionmaker: sessionmaker[Session]) -> None:
    rows: list[dict[str, object]] = [
        {
            "version": v,
            "file": "m.keras",
            "sha256": "0" * 64,
            "threshold": 0.5,
            "metrics": {},
            "card": {},
            "is_current": True,
        }
        for v in ("a", "b")
    ]
    with pytest.raises(IntegrityError), db_sessionmaker.begin() as session:
        session.execute(insert(ModelVersion), rows)


def test_deleting_a_job_removes_its_batches_and_results_and_keeps_its_audit_trail(
    db_sessionmaker: sessionmaker[Session],
) -> None:
    with db_sessionmaker.begin() as session:
        job = create_random_job(session=session)
        plan_random_images(session=session, job_id=job.id, count=10, batch_size=4)
        record_event(session=session, actor="t", action="job.submit", job_id=job.id)
    with db_sessionmaker.begin() as session:
        session.delete(session.get(Job, job.id))
    with db_sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(Batch)) == 0
        assert session.scalar(select(func.count()).select_from(ImageResult)) == 0
        event = session.scalars(select(AuditEvent)).one()
        assert event.job_id is None and event.action == "job.submit"
