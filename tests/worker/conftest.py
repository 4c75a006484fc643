"""A brainscan service environment per test: embedded (SQLite + files) or scale-out (PostgreSQL + Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from brainscan.testing import FAST_TIMINGS, Service, redis_test_url
from tests.conftest import SHIPPED_MODEL


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return {
        "BRAINSCAN_ENV": "test",
        "BRAINSCAN_DATA_DIR": str(data),
        # jobs here are made directly (Service.submit) from folders anywhere, the shared data
        # included; tests/api and tests/worker/test_planning check the archive-root confinement
        "BRAINSCAN_ARCHIVE_ROOT": "/",
        "BRAINSCAN_MODEL_PATH": str(SHIPPED_MODEL),
        **FAST_TIMINGS,
        **extra,
    }


@pytest.fixture
def embedded(tmp_path: Path, sqlite_database_url: str) -> Service:
    """SQLite file + kombu's filesystem transport, as `brainscan up` runs by default."""
    return Service(service_env(tmp_path, BRAINSCAN_DATABASE_URL=sqlite_database_url))


@pytest.fixture
def scaleout(tmp_path: Path, postgres_database_url: str) -> Service:
    """The real PostgreSQL and Redis, as docker compose runs it."""
    return Service(
        service_env(
            tmp_path, BRAINSCAN_DATABASE_URL=postgres_database_url, BRAINSCAN_BROKER_URL=redis_test_url()
        )
    )


@pytest.fixture(params=["embedded", "scaleout"])
def service(request: pytest.FixtureRequest) -> Iterator[Service]:
    """Both deployments: the test runs once on each."""
    yield request.getfixturevalue(request.param)
