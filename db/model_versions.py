"""The models the service has scored with: version, file, checksum, threshold, metrics, card.

Functions run inside the caller's transaction and never commit (``with Session.begin()``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ModelVersion


def register_model_version(
    *,
    session: Session,
    version: str,
    file: str,
    sha256: str,
    threshold: float,
    metrics: dict[str, Any],
    card: dict[str, Any],
    make_current: bool = True,
) -> ModelVersion:
    """Insert or update the row for `version`, optionally making it the one current version."""
    row = session.scalars(select(ModelVersion).where(ModelVersion.version == version)).first()
    if row is None:
        row = ModelVersion(version=version, is_current=False)
        session.add(row)
    row.file, row.sha256, row.threshold, row.metrics, row.card = file, sha256, threshold, metrics, card
    session.flush()
    if make_current and not row.is_current:
        # clear the old current first: a unique partial index allows one current version
        session.execute(
            update(ModelVersion).where(ModelVersion.is_current.is_(True)).values(is_current=False)
        )
        row.is_current = True
        session.flush()
    return row


def current_model_version(*, session: Session) -> ModelVersion | None:
    """The version new jobs score with, or None before any is registered."""
    return session.scalars(select(ModelVersion).where(ModelVersion.is_current.is_(True))).first()


def list_model_versions(*, session: Session) -> list[ModelVersion]:
    """Every registered version, newest first."""
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))


def model_version_named(*, session: Session, version: str) -> ModelVersion | None:
    """The registered model of that version (a job's), or None."""
    return session.scalars(select(ModelVersion).where(ModelVersion.version == version)).first()
