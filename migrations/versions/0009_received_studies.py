"""Studies received over DICOM (C-STORE): each study's open delivery (the instances received
since its last job), when its last instance came, and who sent it; a stable delivery becomes a job.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "received_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("delivery", sa.Integer(), nullable=False),
        sa.Column("open_instances", sa.Integer(), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_job_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_received_studies"),
        sa.UniqueConstraint("study_uid", name="uq_received_studies_study_uid"),
        sa.ForeignKeyConstraint(
            ["last_job_id"], ["jobs.id"], name="fk_received_studies_last_job_id_jobs", ondelete="SET NULL"
        ),
    )


def downgrade() -> None:
    op.drop_table("received_studies")
