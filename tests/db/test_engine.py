"""Engines and sessions: SQLite settings, writers that wait instead of failing, UTC timestamps, fork."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from db.audit import record_event
from db.engine import (
    dispose_all,
    get_engine,
    get_sessionmaker,
    make_engine,
    reset_after_fork,
    session_factory,
)
from db.jobs import get_job
from db.models import AuditEvent, Job
from tests.dbfixtures import create_random_job


def test_sqlite_connections_use_wal_foreign_keys_and_a_long_busy_timeout(sqlite_database_url: str) -> None:
    engine = make_engine(sqlite_database_url)
    with engine.connect() as connection:
        pragma = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    engine.dispose()
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30_000, "synchronous": 1}


def test_timestamps_come_back_timezone_aware_utc(db_sessionmaker: sessionmaker[Session]) -> None:
    with db_sessionmaker.begin() as session:
        job_id = create_random_job(session=session).id
    with db_sessionmaker() as session:
        job = get_job(session=session, job_id=job_id)
        assert job is not None and job.created_at.tzinfo == UTC
        assert abs((datetime.now(UTC) - job.created_at).total_seconds()) < 60


def test_a_naive_timestamp_is_refused(db_sessionmaker: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), db_sessionmaker.begin() as session:
        create_random_job(session=session).planned_at = datetime(2024, 1, 1)
        session.flush()


def _read_then_write(maker: sessionmaker[Session], job_id: int, rounds: int) -> int:
    for n in range(rounds):
        with maker.begin() as session:
            get_job(session=session, job_id=job_id)
            time.sleep(0.002)  # let the other writer read too: deferred transactions would now deadlock
            record_event(session=session, actor="t", action="job.submit", job_id=job_id, detail={"n": n})
    return rounds


def test_two_read_then_write_writers_wait_for_each_other_instead_of_failing(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(2)]
    makers = [session_factory(engine) for engine in engines]
    with makers[0].begin() as session:
        job_id = create_random_job(session=session).id
    barrier = threading.Barrier(2)

    def writer(maker: sessionmaker[Session]) -> int:
        barrier.wait(timeout=10)
        return _read_then_write(maker, job_id, 25)

    with ThreadPoolExecutor(2) as pool:
        done = [f.result(timeout=120) for f in [pool.submit(writer, m) for m in makers]]
    with makers[0]() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == sum(done) == 50
    for engine in engines:
        engine.dispose()


def test_a_read_only_sqlite_session_does_not_block_writers(sqlite_database_url: str) -> None:
    engine = make_engine(sqlite_database_url)
    reader, writer = session_factory(engine, read_only=True), session_factory(engine)
    with writer.begin() as session:
        job_id = create_random_job(session=session).id
    with reader.begin() as reading:
        assert get_job(session=reading, job_id=job_id) is not None  # holds a read transaction open
        started = time.monotonic()
        with writer.begin() as session:
            create_random_job(session=session)
        assert time.monotonic() - started < 2
    engine.dispose()


def _count_jobs_in_child(url: str, queue: multiprocessing.Queue[int]) -> None:
    reset_after_fork()
    with get_sessionmaker(url)() as session:
        queue.put(int(session.scalar(select(func.count()).select_from(Job)) or 0))


@pytest.fixture
def cached_engines() -> Iterator[None]:
    yield
    dispose_all()


@pytest.mark.usefixtures("cached_engines")
def test_a_forked_child_gets_its_own_connections_and_the_parent_keeps_its(database_url: str) -> None:
    maker = get_sessionmaker(database_url)
    with maker.begin() as session:
        create_random_job(session=session)
    engine: Engine = get_engine(database_url)
    with engine.connect() as connection:  # the parent holds a pooled connection across the fork
        context = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[int] = context.Queue()
        child = context.Process(target=_count_jobs_in_child, args=(database_url, queue))
        child.start()
        assert queue.get(timeout=60) == 1
        child.join(timeout=60)
        assert child.exitcode == 0
        assert connection.execute(text("SELECT 1")).scalar() == 1
    with maker() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1
