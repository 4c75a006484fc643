"""When a job was last re-run (its elapsed time counts from then), and whether an image's error
is permanent (its bytes are not a usable slice: a re-run would fail the same way, so it is not
retried) or may pass on a later try (the file could not be read, or was missing).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ADD COLUMN, also on SQLite: a batch copy of image_results would recreate its indexes in
    # another order, and SQLite's planner (no statistics) then takes job_id_id over the partial ones
    op.add_column("jobs", sa.Column("rerun_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "image_results",
        sa.Column("error_permanent", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("image_results") as results:
        results.drop_column("error_permanent")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("rerun_at")
