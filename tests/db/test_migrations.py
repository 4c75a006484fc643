"""Migrations: build an empty database, take it down cleanly, and agree with the models."""

from __future__ import annotations

from datetime import timedelta

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import sessionmaker as make_sessionmaker

from db import migrate
from db.engine import make_engine
from db.models import ApiToken, Base, User, utcnow

TABLES = {
    "jobs",
    "batches",
    "image_results",
    "series",
    "reviews",
    "site_profiles",
    "received_studies",
    "notifications",
    "result_deliveries",
    "model_versions",
    "api_tokens",
    "users",
    "audit_events",
}
HEAD = "0013"


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_upgrade_an_empty_database_and_downgrade_cleanly(empty_database_url: str) -> None:
    assert migrate.current(empty_database_url) is None
    migrate.upgrade(empty_database_url)
    assert migrate.current(empty_database_url) == HEAD
    assert _tables(empty_database_url) == TABLES
    migrate.downgrade(empty_database_url, "base")
    assert migrate.current(empty_database_url) is None
    assert _tables(empty_database_url) == set()
    migrate.upgrade(empty_database_url)  # and back up again: the downgrade left nothing behind
    assert _tables(empty_database_url) == TABLES


def test_upgrading_a_populated_database_keeps_its_rows(empty_database_url: str) -> None:
    """0001 -> head on a database in use (what an upgrade does) keeps the audit log, and back."""
    migrate.upgrade(empty_database_url, "0001")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO audit_events (at, actor, action) "
                    "VALUES (CURRENT_TIMESTAMP, 'user:ana', 'login.failed')"
                )
            )
        migrate.upgrade(empty_database_url)
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("audit_events")}
        assert "ix_audit_events_actor_action_at" in indexes
        migrate.downgrade(empty_database_url, "0001")
        engine.dispose()
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("audit_events")}
        assert "ix_audit_events_actor_action_at" not in indexes
        with engine.connect() as connection:
            assert connection.execute(text("SELECT actor FROM audit_events")).scalar_one() == "user:ana"
    finally:
        engine.dispose()


def test_logins_and_tokens_from_before_owners_keep_seeing_every_job(empty_database_url: str) -> None:
    """0002 -> 0003: existing users and tokens get all-jobs (they saw every job before); tokens an
    expiry a year on; the first-come job of a key stays where it is."""
    migrate.upgrade(empty_database_url, "0002")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (username, password_hash, created_at, disabled) "
                    "VALUES ('ana', 'x', CURRENT_TIMESTAMP, false)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO api_tokens (name, prefix, secret_hash, scopes, created_at) VALUES "
                    "('dashboard', 'bs_a', 'h1', 'read', CURRENT_TIMESTAMP), "
                    "('root', 'bs_b', 'h2', 'admin', CURRENT_TIMESTAMP)"
                )
            )
        migrate.upgrade(empty_database_url)
        with make_sessionmaker(engine)() as session:
            user = session.scalars(select(User)).one()
            tokens = {t.name: t for t in session.scalars(select(ApiToken))}
        assert (user.scopes, user.session_generation, user.team) == ("read,submit,all-jobs", 0, None)
        assert tokens["dashboard"].scopes == "read,all-jobs" and tokens["root"].scopes == "admin"
        for token in tokens.values():
            assert token.expires_at is not None
            assert timedelta(days=364) < token.expires_at - utcnow() <= timedelta(days=365)
    finally:
        engine.dispose()


def _a_job_with_one_image(url: str) -> None:
    """A running job, one batch, one pending image row, as any schema from 0002 on takes them."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO jobs (id, source, source_kind, source_path, status, total, skipped, "
                    "model_version, threshold, batch_size, submitted_by, created_at) VALUES (1, 'a', "
                    "'folder', '/a', 'running', 1, 0, 'm', 0.5, 10, 'user:ana', CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text(
                    'INSERT INTO batches (id, job_id, "index", status, size, attempts, enqueued_at, '
                    "scored, failed, flagged) VALUES (1, 1, 0, 'queued', 1, 0, CURRENT_TIMESTAMP, 0, 0, 0)"
                )
            )
            connection.execute(text(IMAGE_ROW.format("", "'a/IM1.dcm'")))
    finally:
        engine.dispose()


IMAGE_ROW = (
    "INSERT INTO image_results (job_id, batch_id, size_bytes, status, relpath{}) "
    "VALUES (1, 1, 1, 'pending', {})"
)


def _counts(url: str) -> tuple[int, int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            count = lambda table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: E731
            return count("jobs"), count("batches"), count("image_results")
    finally:
        engine.dispose()


def test_migrations_keep_jobs_batches_and_results(empty_database_url: str) -> None:
    """Every step from 0002 up and back keeps a job's rows: on SQLite a table is altered by copying
    it, and dropping the old `jobs` once cascaded to every batch and result (fixed in env.py)."""
    migrate.upgrade(empty_database_url, "0002")
    _a_job_with_one_image(empty_database_url)
    steps = [f"{n:04d}" for n in range(3, int(HEAD) + 1)]
    for revision in [*steps, *reversed(steps[:-1]), "0002"]:  # up to the head, then back down
        if revision > (migrate.current(empty_database_url) or ""):
            migrate.upgrade(empty_database_url, revision)
        else:
            migrate.downgrade(empty_database_url, revision)
        assert _counts(empty_database_url) == (1, 1, 1), revision


def test_image_rows_from_before_frames_keep_their_place_and_a_file_may_hold_frames(
    empty_database_url: str,
) -> None:
    """0003 -> 0004: a job's image rows stay, as frame 0 of no series; a multi-frame file's frames
    then share its path; back at 0003 the file's first frame stands for it."""
    migrate.upgrade(empty_database_url, "0003")
    _a_job_with_one_image(empty_database_url)
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            kept = connection.execute(text("SELECT relpath, frame, series_id FROM image_results")).one()
            assert tuple(kept) == ("a/IM1.dcm", 0, None)
            for frame in (1, 2):
                connection.execute(text(IMAGE_ROW.format(", frame", f"'a/MF.dcm', {frame}")))
        migrate.downgrade(empty_database_url, "0003")
        engine.dispose()
        with engine.connect() as connection:
            paths = connection.execute(text("SELECT relpath FROM image_results ORDER BY relpath"))
            assert [p for (p,) in paths] == ["a/IM1.dcm", "a/MF.dcm"]
    finally:
        engine.dispose()


def test_autogenerate_finds_no_difference_between_models_and_migrations(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []
