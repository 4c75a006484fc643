"""Out of distribution, per image and per batch: each image's distance from the training images'
pooled features (training.ood) and whether it lies beyond the model's threshold (then an
unflagged image is `not assessed`), and each batch's count of those. Null where the model has
no out-of-distribution reference.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # plain ADD COLUMN, as in 0006: a batch copy would reorder image_results' indexes on SQLite
    op.add_column("image_results", sa.Column("ood_distance", sa.Float(), nullable=True))
    op.add_column("image_results", sa.Column("out_of_distribution", sa.Boolean(), nullable=True))
    op.add_column("batches", sa.Column("out_of_distribution", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batches:
        batches.drop_column("out_of_distribution")
    with op.batch_alter_table("image_results") as results:
        results.drop_column("out_of_distribution")
        results.drop_column("ood_distance")
