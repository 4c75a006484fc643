"""Owners and teams, per-caller idempotency keys, session generations, token expiry, client addresses.

Jobs record the submitter's team and a hash of what was asked (a repeated Idempotency-Key with
another body is refused); keys are unique per submitter, not globally. Users get scopes, a team
and a session generation; tokens a team and an expiry; audit events the client's address, so
sign-in throttling can count per address instead of locking an account anyone can name.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
KEY_PER_SUBMITTER = "uq_jobs_submitted_by_idempotency_key"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
        jobs.add_column(sa.Column("team", sa.String(64), nullable=True))
        jobs.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        jobs.create_unique_constraint(KEY_PER_SUBMITTER, ["submitted_by", "idempotency_key"])
    with op.batch_alter_table("api_tokens") as tokens:
        tokens.add_column(sa.Column("team", sa.String(64), nullable=True))
        tokens.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("scopes", sa.String(64), server_default="read,submit", nullable=False))
        users.add_column(sa.Column("team", sa.String(64), nullable=True))
        users.add_column(sa.Column("session_generation", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("audit_events") as events:
        events.add_column(sa.Column("client", sa.String(64), nullable=True))
    op.create_index("ix_audit_events_client_action_at", "audit_events", ["client", "action", "at"])
    _keep_what_existing_logins_and_tokens_could_do()


def _keep_what_existing_logins_and_tokens_could_do() -> None:
    """Logins and tokens made before owners existed saw every job: they keep that (all-jobs) until
    an administrator narrows them; tokens without an expiry get one a year from now."""
    bind = op.get_bind()
    in_a_year = datetime.now(UTC) + timedelta(days=365)
    if bind.dialect.name != "postgresql":
        in_a_year = in_a_year.replace(tzinfo=None)  # SQLite keeps naive UTC (db.models.UTCDateTime)
    users = sa.table("users", sa.column("scopes", sa.String()))
    tokens = sa.table(
        "api_tokens", sa.column("scopes", sa.String()), sa.column("expires_at", sa.DateTime(timezone=True))
    )
    op.execute(users.update().values(scopes="read,submit,all-jobs"))
    op.execute(
        tokens.update().where(~tokens.c.scopes.contains("admin")).values(scopes=tokens.c.scopes + ",all-jobs")
    )
    op.execute(tokens.update().where(tokens.c.expires_at.is_(None)).values(expires_at=in_a_year))


def downgrade() -> None:
    op.drop_index("ix_audit_events_client_action_at", table_name="audit_events")
    with op.batch_alter_table("audit_events") as events:
        events.drop_column("client")
    with op.batch_alter_table("users") as users:
        for column in ("session_generation", "team", "scopes"):
            users.drop_column(column)
    with op.batch_alter_table("api_tokens") as tokens:
        for column in ("expires_at", "team"):
            tokens.drop_column(column)
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_constraint(KEY_PER_SUBMITTER, type_="unique")
        jobs.create_unique_constraint("uq_jobs_idempotency_key", ["idempotency_key"])
        for column in ("team", "request_hash"):
            jobs.drop_column(column)
