"""Result deliveries: each DICOM study of a job whose results go back to the PACS gets a row per
destination when the job succeeds (an outbox, like notifications); the sender builds a DICOM SR
and a Key Object Selection for it, sends them, and keeps the state. `jobs.return_to` names the
destinations a job's results go to.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("return_to", sa.String(255), nullable=True))
    op.create_table(
        "result_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("objects", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_result_deliveries"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_result_deliveries_job_id_jobs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "job_id", "study_uid", "destination", name="uq_result_deliveries_job_id_study_uid_destination"
        ),
    )


def downgrade() -> None:
    op.drop_table("result_deliveries")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("return_to")
