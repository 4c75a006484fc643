"""The notification outbox: a row per job that ended, written in the transaction that ended it,
claimed and marked by the sender (worker/notify.py) through db.outbox.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Notification


def job_ended(*, session: Session, job_id: int, status: str) -> None:
    """Note that the job ended with `status` (succeeded, failed or cancelled)."""
    session.add(Notification(job_id=job_id, event=f"job.{status}"))
    session.flush()


def job_notifications(*, session: Session, job_id: int) -> list[Notification]:
    return list(
        session.scalars(select(Notification).where(Notification.job_id == job_id).order_by(Notification.id))
    )
