"""Database fixtures: a migrated SQLite file per test, a fresh PostgreSQL database per test session.

Load it for the whole suite with ``pytest_plugins = ["tests.dbfixtures"]`` in tests/conftest.py.
PostgreSQL comes from BRAINSCAN_TEST_POSTGRES (server URL without a database name, default
postgresql+psycopg://postgres@127.0.0.1:5432; see brainscan.testing.fresh_postgres_database); where
it is unreachable the PostgreSQL cases skip saying so, except under CI=true, where they fail.
"""

from __future__ import annotations

import random
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from brainscan.testing import fresh_postgres_database
from db.batches import PlannedImage, add_batch
from db.engine import dispose_all, make_engine, session_factory
from db.jobs import create_job
from db.migrate import upgrade
from db.models import Base, Job
from db.results import ScoredImage, pending_images, record_results

DIALECTS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres_session_database() -> Iterator[str]:
    """URL of a PostgreSQL database migrated to head, shared by this test session."""
    with fresh_postgres_database() as url:
        upgrade(url)
        yield url


@pytest.fixture
def postgres_database_url(postgres_session_database: str) -> str:
    """URL of the session's PostgreSQL database, emptied (ids restart at 1) for this test."""
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    engine = create_engine(postgres_session_database, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE TABLE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return postgres_session_database


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "brainscan.db"
    upgrade(f"sqlite:///{path}")
    dispose_all()
    return path


@pytest.fixture
def sqlite_database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a fresh migrated SQLite file for this test."""
    path = tmp_path / "brainscan.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database: the test runs once on SQLite and once on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_database_url"))


@pytest.fixture(params=DIALECTS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (migration tests), on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with fresh_postgres_database("brainscan_test_empty") as url:
        yield url


@pytest.fixture
def db_engine(database_url: str) -> Iterator[Engine]:
    """An engine on `database_url`, disposed after the test."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_sessionmaker(db_engine: Engine) -> sessionmaker[Session]:
    """Sessions on `db_engine`; use ``with db_sessionmaker.begin() as session:``."""
    return session_factory(db_engine)


def create_random_job(*, session: Session, **overrides: object) -> Job:
    """A queued job with plausible random values; keyword arguments override any of them."""
    values: dict[str, object] = {
        "source": f"ward-{secrets.token_hex(3)}",
        "source_kind": "folder",
        "source_path": "/archive/ward",
        "submitted_by": "tester",
        "model_version": "v-test",
        "threshold": 0.5,
        "batch_size": 256,
    }
    values.update(overrides)
    job, _ = create_job(session=session, **values)  # type: ignore[arg-type]
    return job


def plan_random_images(
    *, session: Session, job_id: int, count: int, batch_size: int, rng: random.Random | None = None
) -> list[int]:
    """Record `count` images (labels 0, 1 or unknown) in batches of `batch_size`; returns batch ids."""
    rng = rng or random.Random(0)
    images = [
        PlannedImage(f"scan-{i:06d}.png", rng.randint(1_000, 90_000), rng.choice((0, 1, 1, None)))
        for i in range(count)
    ]
    return [
        add_batch(session=session, job_id=job_id, index=n, images=images[start : start + batch_size])
        for n, start in enumerate(range(0, count, batch_size))
    ]


def score_randomly(
    *,
    session: Session,
    job_id: int,
    batch_id: int,
    rng: random.Random,
    error_rate: float = 0.1,
    threshold: float = 0.5,
) -> list[ScoredImage]:
    """Record a random outcome for every image of the batch still to score; returns what was recorded."""
    results = []
    for image in pending_images(session=session, batch_id=batch_id):
        if rng.random() < error_rate:
            results.append(
                ScoredImage(image.relpath, None, None, error="cannot identify image file", frame=image.frame)
            )
        else:
            probability = rng.random()
            flagged, digest = probability >= threshold, secrets.token_hex(32)
            results.append(
                ScoredImage(image.relpath, probability, flagged, content_hash=digest, frame=image.frame)
            )
    record_results(session=session, job_id=job_id, batch_id=batch_id, results=results)
    return results
