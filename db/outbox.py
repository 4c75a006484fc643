"""Outboxes: rows written in the transaction that made something due to send (a webhook, a
study's result for the PACS), claimed by one sender among several workers, marked sent or failed
with a backoff. Shared by db.notifications and db.deliveries.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import Notification, ResultDelivery

CLAIM = timedelta(seconds=60)  # a sender holds a claimed row this long
Row = TypeVar("Row", Notification, ResultDelivery)


def claim_due(*, session: Session, model: type[Row], now: datetime, limit: int = 50) -> list[Row]:
    """Rows of `model` due now, each claimed for CLAIM (one sender among several sends it)."""
    due = select(model.id).where(
        model.delivered_at.is_(None), model.gave_up_at.is_(None), model.next_at <= now
    )
    claimed = []
    for row_id in session.scalars(due.order_by(model.id).limit(limit)).all():
        won = session.execute(
            update(model)
            .where(model.id == row_id, model.next_at <= now)
            .values(next_at=now + CLAIM)
            .returning(model.id)
        ).first()
        if won is not None:
            claimed.append(row_id)
    return list(session.scalars(select(model).where(model.id.in_(claimed)).order_by(model.id)))


def mark_sent(*, session: Session, model: type[Row], row_id: int, now: datetime, **values: object) -> None:
    """Delivered now; `values` sets other columns of the row too."""
    session.execute(
        update(model)
        .where(model.id == row_id)
        .values(delivered_at=now, attempts=model.attempts + 1, last_error=None, **values)
    )


def mark_failed(
    *, session: Session, model: type[Row], row_id: int, now: datetime, error: str, retry_in: timedelta | None
) -> None:
    """One more failed attempt: tried again after `retry_in`, or given up (None)."""
    values: dict[str, object] = {"attempts": model.attempts + 1, "last_error": error[:255]}
    values.update(next_at=now + retry_in) if retry_in is not None else values.update(gave_up_at=now)
    session.execute(update(model).where(model.id == row_id).values(values))


def record_failure(
    *,
    session: Session,
    model: type[Row],
    row_id: int,
    attempts: int,
    error: str,
    max_attempts: int,
    now: datetime,
    permanent: bool = False,
) -> timedelta | None:
    """Mark a failed attempt (the row had `attempts` before it): due again after the backoff, or
    given up (after max_attempts, or at once when `permanent`). Returns the wait; None: given up."""
    wait = None if permanent else retry_in(attempts + 1, max_attempts=max_attempts)
    mark_failed(session=session, model=model, row_id=row_id, now=now, error=error, retry_in=wait)
    return wait


def describe_wait(wait: timedelta | None) -> str:
    """What record_failure's answer means, for a log line."""
    return f"again in {wait}" if wait else "given up"


def retry_in(attempts: int, *, max_attempts: int) -> timedelta | None:
    """The wait before the next try after `attempts` failed ones: 30 s, 1, 2, 4 ... minutes, at
    most an hour apart; None: give up."""
    if attempts >= max_attempts:
        return None
    return timedelta(seconds=min(3600, 30 * 2 ** (attempts - 1)))
