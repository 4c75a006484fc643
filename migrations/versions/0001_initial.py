"""Initial schema: jobs, batches, image results, model versions, API tokens, users, audit events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite auto-increments INTEGER keys only
FLAGGED = "flagged = true"
ERRORS = "status = 'error'"
FALSE_NEGATIVES = "label = 1 AND flagged = false"


def _at(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _count(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def _matrix() -> list[sa.Column[int]]:
    return [sa.Column(name, sa.Integer(), nullable=True) for name in ("tp", "fp", "tn", "fn")]


def _one_of(column: str, values: tuple[str, ...], table: str) -> sa.CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({quoted})", name=f"ck_{table}_{column}")


def _partial(name: str, where: str) -> None:
    op.create_index(
        name, "image_results", ["job_id", "id"], sqlite_where=sa.text(where), postgresql_where=sa.text(where)
    )


def upgrade() -> None:
    for create in (_jobs, _batches, _image_results, _model_versions, _api_tokens, _users, _audit_events):
        create()


def _jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("source_path", sa.String(4096), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _count("total"),
        _count("skipped"),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("submitted_by", sa.String(255), nullable=False),
        _at("created_at", nullable=False),
        _at("planned_at"),
        _at("heartbeat_at"),
        _at("started_at"),
        _at("finished_at"),
        sa.Column("error", sa.Text(), nullable=True),
        *_matrix(),
        sa.Column("recall", sa.Float(), nullable=True),
        sa.Column("specificity", sa.Float(), nullable=True),
        sa.Column("images_per_second", sa.Float(), nullable=True),
        _one_of("source_kind", ("folder", "upload"), "jobs"),
        _one_of("status", ("queued", "planning", "running", "succeeded", "failed", "cancelled"), "jobs"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
    )
    op.create_index("ix_jobs_status_id", "jobs", ["status", "id"])


def _batches() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        _count("attempts"),
        sa.Column("worker", sa.String(255), nullable=True),
        _at("enqueued_at", nullable=False),
        _at("started_at"),
        _at("finished_at"),
        sa.Column("seconds", sa.Float(), nullable=True),
        _count("scored"),
        _count("failed"),
        _count("flagged"),
        *_matrix(),
        sa.Column("error", sa.Text(), nullable=True),
        _one_of("status", ("queued", "running", "done", "failed", "cancelled"), "batches"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_batches_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
        sa.UniqueConstraint("job_id", "index", name="uq_batches_job_id_index"),
    )
    op.create_index("ix_batches_status", "batches", ["status"])


def _image_results() -> None:
    op.create_table(
        "image_results",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("relpath", sa.String(1024), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("label", sa.SmallInteger(), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _at("scored_at"),
        _one_of("status", ("pending", "scored", "error"), "image_results"),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name="fk_image_results_batch_id_batches", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_image_results_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_image_results"),
        sa.UniqueConstraint("job_id", "relpath", name="uq_image_results_job_id_relpath"),
    )
    op.create_index("ix_image_results_batch_id", "image_results", ["batch_id"])
    op.create_index("ix_image_results_job_id_id", "image_results", ["job_id", "id"])
    _partial("ix_image_results_flagged", FLAGGED)
    _partial("ix_image_results_errors", ERRORS)
    _partial("ix_image_results_false_negatives", FALSE_NEGATIVES)


def _model_versions() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("file", sa.String(4096), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        _at("created_at", nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("version", name="uq_model_versions_version"),
    )
    op.create_index(
        "uq_model_versions_current",
        "model_versions",
        ["is_current"],
        unique=True,
        sqlite_where=sa.text("is_current = true"),
        postgresql_where=sa.text("is_current = true"),
    )


def _api_tokens() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(8), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        _at("created_at", nullable=False),
        _at("last_used_at"),
        _at("revoked_at"),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("secret_hash", name="uq_api_tokens_secret_hash"),
    )
    op.create_index("ix_api_tokens_prefix", "api_tokens", ["prefix"])


def _users() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _at("created_at", nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )


def _audit_events() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", BIG_ID, nullable=False),
        _at("at", nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_audit_events_job_id_jobs", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_job_id_id", "audit_events", ["job_id", "id"])


def downgrade() -> None:
    # dropping a table drops its indexes; children before parents
    for table in (
        "audit_events",
        "users",
        "api_tokens",
        "model_versions",
        "image_results",
        "batches",
        "jobs",
    ):
        op.drop_table(table)
