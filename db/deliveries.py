"""Result deliveries: a row per DICOM study of a succeeded job and per destination its results go
to, written in the transaction that ends the job (an outbox), claimed and marked by the sender
(worker/pacs.py) through db.outbox; re-sent on demand.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ImageResult, Job, ResultDelivery, Series


def destination_names(value: str | None) -> list[str]:
    """The names in a comma-separated list (a job's return_to), in order, each once."""
    return list(dict.fromkeys(n.strip() for n in (value or "").split(",") if n.strip()))


def dicom_studies(*, session: Session, job_id: int) -> list[str]:
    """The StudyInstanceUIDs of the job's DICOM series, sorted."""
    stmt = select(Series.study_key).where(Series.job_id == job_id, Series.dicom.is_(True)).distinct()
    return sorted(session.scalars(stmt))


def plan_returns(*, session: Session, job_id: int) -> int:
    """Queue the results of every DICOM study of the job for each destination its return_to
    names, where not queued already; returns how many rows were added."""
    job = session.get(Job, job_id)
    names = destination_names(job.return_to if job else None)
    if not names:
        return 0
    have = {
        (study, name)
        for study, name in session.execute(
            select(ResultDelivery.study_uid, ResultDelivery.destination).where(
                ResultDelivery.job_id == job_id
            )
        )
    }
    rows = [
        ResultDelivery(job_id=job_id, study_uid=study, destination=name)
        for study in dicom_studies(session=session, job_id=job_id)
        for name in names
        if (study, name) not in have
    ]
    session.add_all(rows)
    session.flush()
    return len(rows)


def resend(*, session: Session, job_id: int, destinations: list[str], now: datetime) -> int:
    """Send the job's study results to `destinations` again from now (rows added where missing,
    delivered or given-up ones due again, their attempts counted afresh); how many are due."""
    job = session.get(Job, job_id)
    assert job is not None
    merged = destination_names(",".join([job.return_to or "", *destinations]))
    job.return_to = ",".join(merged)
    plan_returns(session=session, job_id=job_id)
    result = session.execute(
        update(ResultDelivery)
        .where(ResultDelivery.job_id == job_id, ResultDelivery.destination.in_(destinations))
        .values(next_at=now, delivered_at=None, gave_up_at=None, attempts=0, last_error=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def job_deliveries(*, session: Session, job_id: int) -> list[ResultDelivery]:
    return list(
        session.scalars(
            select(ResultDelivery)
            .where(ResultDelivery.job_id == job_id)
            .order_by(ResultDelivery.study_uid, ResultDelivery.destination)
        )
    )


def flagged_instances(*, session: Session, job_id: int, study_uid: str) -> list[tuple[str, int]]:
    """(relpath, frame) of the study's flagged images in series the model is fit for, in order."""
    stmt = (
        select(ImageResult.relpath, ImageResult.frame)
        .join(Series, ImageResult.series_id == Series.id)
        .where(
            ImageResult.job_id == job_id,
            Series.study_key == study_uid,
            Series.not_assessed.is_(None),
            ImageResult.flagged.is_(True),
        )
        .order_by(ImageResult.relpath, ImageResult.frame)
    )
    return [(relpath, frame) for relpath, frame in session.execute(stmt)]


def any_instance(*, session: Session, job_id: int, study_uid: str) -> str | None:
    """One image file of the study (the first by path): its patient and study modules head an SR."""
    stmt = (
        select(ImageResult.relpath)
        .join(Series, ImageResult.series_id == Series.id)
        .where(ImageResult.job_id == job_id, Series.study_key == study_uid)
        .order_by(ImageResult.relpath)
        .limit(1)
    )
    return session.scalars(stmt).first()
