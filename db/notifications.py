"""The notification outbox: a row per job that ended, written in the transaction that ended it,
claimed and marked by the sender (worker/notify.py).

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import Notification

CLAIM = timedelta(seconds=60)  # a sender holds a claimed notification this long


def job_ended(*, session: Session, job_id: int, status: str) -> None:
    """Note that the job ended with `status` (succeeded, failed or cancelled)."""
    session.add(Notification(job_id=job_id, event=f"job.{status}"))
    session.flush()


def claim_due(*, session: Session, now: datetime, limit: int = 50) -> list[Notification]:
    """Notifications due now, each claimed for CLAIM (one sender among several workers sends it)."""
    due = select(Notification.id).where(
        Notification.delivered_at.is_(None), Notification.gave_up_at.is_(None), Notification.next_at <= now
    )
    claimed = []
    for notification_id in session.scalars(due.order_by(Notification.id).limit(limit)).all():
        won = session.execute(
            update(Notification)
            .where(Notification.id == notification_id, Notification.next_at <= now)
            .values(next_at=now + CLAIM)
            .returning(Notification.id)
        ).first()
        if won is not None:
            claimed.append(notification_id)
    return list(
        session.scalars(select(Notification).where(Notification.id.in_(claimed)).order_by(Notification.id))
    )


def mark_sent(*, session: Session, notification_id: int, now: datetime) -> None:
    session.execute(
        update(Notification)
        .where(Notification.id == notification_id)
        .values(delivered_at=now, attempts=Notification.attempts + 1, last_error=None)
    )


def mark_failed(
    *, session: Session, notification_id: int, now: datetime, error: str, retry_in: timedelta | None
) -> None:
    """One more failed attempt: tried again after `retry_in`, or given up (None)."""
    values: dict[str, object] = {"attempts": Notification.attempts + 1, "last_error": error[:255]}
    values.update(next_at=now + retry_in) if retry_in is not None else values.update(gave_up_at=now)
    session.execute(update(Notification).where(Notification.id == notification_id).values(values))


def job_notifications(*, session: Session, job_id: int) -> list[Notification]:
    return list(
        session.scalars(select(Notification).where(Notification.job_id == job_id).order_by(Notification.id))
    )
