"""The audit trail: who did what, when, to which job.

Functions run inside the caller's transaction and never commit (``with Session.begin()``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import AuditEvent

ACTIONS = (
    "job.submit",
    "job.cancel",
    "job.rerun",
    "results.send",
    "review.verdict",
    "site.profile",
    "token.create",
    "token.revoke",
    "login",
    "login.failed",
    "login.unblock",
    "logout",
    "user.create",
    "user.password",
    "user.disable",
    "user.enable",
    "user.delete",
    "retention.delete",
)


def record_event(
    *,
    session: Session,
    actor: str,
    action: str,
    job_id: int | None = None,
    detail: dict[str, Any] | None = None,
    client: str | None = None,
) -> AuditEvent:
    """Append one event (in the caller's transaction, so it commits with the change it describes)."""
    event = AuditEvent(actor=actor, action=action, job_id=job_id, detail=detail, client=client)
    session.add(event)
    session.flush()
    return event


def list_events(
    *,
    session: Session,
    job_id: int | None = None,
    limit: int = 100,
    before_id: int | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> list[AuditEvent]:
    """Events newest first, optionally of one job, actor or action (an action ending in `.`
    matches its family: `job.` is every job event); pass the last id seen as `before_id` for more."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if job_id is not None:
        stmt = stmt.where(AuditEvent.job_id == job_id)
    if actor is not None:
        stmt = stmt.where(AuditEvent.actor == actor)
    if action is not None:
        matches = AuditEvent.action.startswith(action, autoescape=True) if action.endswith(".") else None
        stmt = stmt.where(matches if matches is not None else AuditEvent.action == action)
    if before_id is not None:
        stmt = stmt.where(AuditEvent.id < before_id)
    return list(session.scalars(stmt))


def recent_events(
    *, session: Session, client: str, action: str, since: datetime
) -> tuple[int, datetime | None]:
    """How many `action` events came from `client` since `since`, and when the last one did
    (sign-in throttling counts one address's failures)."""
    stmt = select(func.count(), func.max(AuditEvent.at)).where(
        AuditEvent.client == client, AuditEvent.action == action, AuditEvent.at >= since
    )
    count, last = session.execute(stmt).one()
    return int(count or 0), last  # max() keeps the column's type: timezone-aware UTC already
