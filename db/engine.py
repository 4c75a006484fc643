"""Engines and sessions: SQLite tuned for concurrent writers, PostgreSQL pooled, both safe after fork.

The caller owns the transaction::

    Session = get_sessionmaker(settings.resolved_database_url)
    with Session.begin() as session:
        job, created = create_job(session=session, ...)

On SQLite every transaction starts with ``BEGIN IMMEDIATE`` (it takes the write lock up front, so
two read-then-write transactions wait for each other instead of failing with "database is
locked"); sessions from ``session_factory(engine, read_only=True)`` use a plain deferred
``BEGIN`` and never block writers (WAL).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "brainscan_read_only"  # execution option: a SQLite transaction that never writes
SQLITE_BUSY_TIMEOUT_MS = 30_000  # a writer waits this long for another writer's commit
POSTGRES_POOL_SIZE = 5  # per process: a worker process uses one, the API a few per thread
POSTGRES_MAX_OVERFLOW = 10
POSTGRES_POOL_RECYCLE_S = 1800  # below common idle-connection cut-offs of proxies and firewalls

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_sessionmakers: dict[tuple[str, bool], sessionmaker[Session]] = {}


def make_engine(url: str) -> Engine:
    """A new engine for `url`, configured for this project's concurrency on SQLite or PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_MAX_OVERFLOW,
        pool_recycle=POSTGRES_POOL_RECYCLE_S,
    )


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN out of the sqlite3 module's hands so that _sqlite_on_begin decides its kind.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "foreign_keys=ON",
        "synchronous=NORMAL",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine` that keep loaded objects usable after commit."""
    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    return sessionmaker(bind=bind, expire_on_commit=False)


def get_engine(url: str) -> Engine:
    """This process's engine for `url`, created on first use."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def get_sessionmaker(url: str, *, read_only: bool = False) -> sessionmaker[Session]:
    """This process's sessionmaker for `url` (read_only: SQLite transactions that never block)."""
    engine = get_engine(url)
    with _lock:
        maker = _sessionmakers.get((url, read_only))
        if maker is None:
            maker = _sessionmakers[(url, read_only)] = session_factory(engine, read_only=read_only)
        return maker


def reset_after_fork() -> None:
    """Drop connections inherited from the parent process without closing them under its feet."""
    global _lock
    _lock = threading.Lock()  # the parent may have forked while another thread held it
    for engine in _engines.values():
        engine.dispose(close=False)


def dispose_all() -> None:
    """Close every cached engine's connections and forget the engines (tests, shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _sessionmakers.clear()
