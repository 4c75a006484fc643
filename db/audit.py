"""The audit trail: who did what, when, to which job.

Functions run inside the caller's transaction and never commit (``with Session.begin()``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import AuditEvent

ACTIONS = ("job.submit", "job.cancel", "job.rerun", "token.create", "token.revoke", "login", "login.failed")


def record_event(*, session: Session, actor: str, action: str, job_id: int | None = None,
                 detail: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event (in the caller's transaction, so it commits with the change it describes)."""
    event = AuditEvent(actor=actor, action=action, job_id=job_id, detail=detail)
    session.add(event)
    session.flush()
    return event


def list_events(*, session: Session, job_id: int | None = None, limit: int = 100,
                before_id: int | None = None) -> list[AuditEvent]:
    """Events newest first, optionally of one job; pass the last id seen as `before_id` for more."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if job_id is not None:
        stmt = stmt.where(AuditEvent.job_id == job_id)
    if before_id is not None:
        stmt = stmt.where(AuditEvent.id < before_id)
    return list(session.scalars(stmt))


def count_events(*, session: Session, actor: str, action: str, since: datetime) -> int:
    """How many `action` events `actor` has had since `since` (login throttling counts failures)."""
    stmt = select(func.count()).where(AuditEvent.actor == actor, AuditEvent.action == action,
                                      AuditEvent.at >= since)
    return int(session.scalar(stmt) or 0)
