"""Site thresholds per series: a job submitted without its own threshold lets each DICOM series
take the active profile of its site (manufacturer and station) for the job's model; the series
keeps the threshold and the profile it took.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("site_profiles", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("series", sa.Column("threshold", sa.Float(), nullable=True))
    op.add_column("series", sa.Column("site_profile_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("series") as series:
        series.drop_column("site_profile_id")
        series.drop_column("threshold")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("site_profiles")
