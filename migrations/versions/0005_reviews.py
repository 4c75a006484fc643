"""Reviews (a radiologist's verdict on one image: tumour, no tumour or unsure, by whom, when); each
batch's score histogram (scores per tenth of [0, 1], for score shift), lease (a claim holds
until then unless its worker renews it) and why it was last sent again; site profiles (a
site's own threshold per model version, versioned and reversible).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("result_id", BIG_ID, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("verdict IN ('tumour', 'no tumour', 'unsure')", name="ck_reviews_verdict"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_reviews_job_id_jobs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["result_id"], ["image_results.id"], name="fk_reviews_result_id_image_results", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("result_id", name="pk_reviews"),
    )
    op.create_index("ix_reviews_job_id", "reviews", ["job_id"])
    with op.batch_alter_table("batches") as batches:
        batches.add_column(sa.Column("score_histogram", sa.JSON(), nullable=True))
        batches.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batches.add_column(sa.Column("requeued_because", sa.String(255), nullable=True))
    op.create_table(
        "site_profiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_site_profiles"),
    )
    op.create_index("ix_site_profiles_site_model_version", "site_profiles", ["site", "model_version"])


def downgrade() -> None:
    op.drop_index("ix_site_profiles_site_model_version", table_name="site_profiles")
    op.drop_table("site_profiles")
    with op.batch_alter_table("batches") as batches:
        batches.drop_column("requeued_because")
        batches.drop_column("lease_until")
        batches.drop_column("score_histogram")
    op.drop_index("ix_reviews_job_id", table_name="reviews")
    op.drop_table("reviews")
