"""Series (DICOM series, or a folder of other images), frames of multi-frame files, skip reasons.

Each image row may belong to a series (study and series UIDs, description, sequence, plane, site,
a keyed hash of PatientID, and why the model is not fit for it when it is not: a localiser, a
derived map), and names its frame: 0 for a single-frame file, 1.. for the frames of
a multi-frame one, so one file may hold several rows and (job, relpath, frame) is the row's key.
Jobs count the files they skipped by reason. Rows from before keep frame 0 and no series.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PARTIAL_INDEXES = {  # as 0001 made them (db.models: FLAGGED, FALSE_NEGATIVES, ERRORS)
    "ix_image_results_flagged": "flagged = true",
    "ix_image_results_false_negatives": "label = 1 AND flagged = false",
    "ix_image_results_errors": "status = 'error'",
}


def upgrade() -> None:
    op.create_table(
        "series",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("study_key", sa.String(1024), nullable=False),
        sa.Column("series_key", sa.String(1024), nullable=False),
        sa.Column("dicom", sa.Boolean(), nullable=False),
        sa.Column("patient_key", sa.String(16), nullable=True),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("sequence", sa.String(255), nullable=False),
        sa.Column("plane", sa.String(16), nullable=False),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("image_type", sa.String(255), nullable=False),
        sa.Column("not_assessed", sa.String(255), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_series_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.UniqueConstraint("job_id", "series_key", name="uq_series_job_id_series_key"),
    )
    op.create_index("ix_series_job_id_study_key", "series", ["job_id", "study_key"])
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("skipped_reasons", sa.JSON(), nullable=True))
    with op.batch_alter_table("image_results") as results:
        results.add_column(sa.Column("frame", sa.Integer(), server_default="0", nullable=False))
        results.add_column(sa.Column("series_id", BIG_ID, nullable=True))
        results.add_column(sa.Column("instance_number", sa.Integer(), nullable=True))
        results.create_foreign_key(
            "fk_image_results_series_id_series", "series", ["series_id"], ["id"], ondelete="CASCADE"
        )
        results.drop_constraint("uq_image_results_job_id_relpath", type_="unique")
        results.create_unique_constraint(
            "uq_image_results_job_id_relpath_frame", ["job_id", "relpath", "frame"]
        )
    op.create_index("ix_image_results_series_id", "image_results", ["series_id"])
    _partial_indexes_last()


def _partial_indexes_last() -> None:
    """SQLite rebuilt image_results (batch mode) and its indexes in no set order; of two equally
    costed indexes its planner takes the one made later, so the filtered listings' partial indexes
    are made again after the plain (job_id, id) one, as 0001 made them."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for name, where in PARTIAL_INDEXES.items():
        op.drop_index(name, table_name="image_results")
        op.create_index(name, "image_results", ["job_id", "id"], sqlite_where=sa.text(where))


def downgrade() -> None:
    op.drop_index("ix_image_results_series_id", table_name="image_results")
    op.execute("DELETE FROM image_results WHERE frame > 1")  # a file's first frame stands for it
    with op.batch_alter_table("image_results") as results:
        results.drop_constraint("uq_image_results_job_id_relpath_frame", type_="unique")
        results.create_unique_constraint("uq_image_results_job_id_relpath", ["job_id", "relpath"])
        results.drop_constraint("fk_image_results_series_id_series", type_="foreignkey")
        results.drop_column("instance_number")
        results.drop_column("series_id")
        results.drop_column("frame")
    _partial_indexes_last()
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("skipped_reasons")
    op.drop_index("ix_series_job_id_study_key", table_name="series")
    op.drop_table("series")
