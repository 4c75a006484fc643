"""Alembic environment: the URL comes from db.migrate (Config attributes) or the app's settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from brainscan.settings import load_settings
from db.engine import make_engine
from db.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return str(url) if url else load_settings().resolved_database_url


def run_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, dialect_opts={"paramstyle": "named"}
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    # make_engine: the same SQLite pragmas and BEGIN IMMEDIATE as the service itself
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                _foreign_keys_off(connection)
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                compare_type=True,
                render_as_batch=sqlite,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _check_foreign_keys(connection)
    finally:
        engine.dispose()


def _foreign_keys_off(connection: Connection) -> None:
    """SQLite alters a table by copying it to a new one and dropping the old: with foreign keys
    enforced, dropping `jobs` would delete every batch and result through ON DELETE CASCADE. So
    migrations run as SQLite's docs prescribe (foreign keys off, set outside any transaction, then
    checked before the commit)."""
    connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left {len(broken)} rows pointing at missing rows: {broken[:5]}")


if context.is_offline_mode():
    run_offline()
else:
    run_online()
