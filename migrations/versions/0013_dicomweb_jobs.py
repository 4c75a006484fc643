"""DICOMweb jobs: a job may retrieve its studies over WADO-RS (source_kind 'dicomweb'); `jobs.pull`
holds what to retrieve ({"url", "studies": [StudyInstanceUIDs]}: UIDs, no patient identifier).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _kinds(*kinds: str) -> str:
    return "source_kind IN ({})".format(", ".join(f"'{k}'" for k in kinds))


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("pull", sa.JSON(), nullable=True))
        jobs.drop_constraint("ck_jobs_source_kind", type_="check")
        jobs.create_check_constraint("ck_jobs_source_kind", _kinds("folder", "upload", "dicomweb"))


def downgrade() -> None:
    op.execute("UPDATE jobs SET source_kind = 'folder' WHERE source_kind = 'dicomweb'")  # kept, as folders
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_constraint("ck_jobs_source_kind", type_="check")
        jobs.create_check_constraint("ck_jobs_source_kind", _kinds("folder", "upload"))
        jobs.drop_column("pull")
