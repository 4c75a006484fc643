"""Two writers at once, each with its own engine: constraints hold and every transition happens once."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.batches import claim_batch, finish_batch
from db.engine import make_engine, session_factory
from db.jobs import create_job, finish_planning, get_job, mark_planning
from db.models import ImageResult, Job
from db.progress import finish_job_if_complete
from db.results import ScoredImage, record_results
from tests.dbfixtures import create_random_job, plan_random_images

REPETITIONS = 20


@pytest.fixture
def two_writers(database_url: str) -> Iterator[list[sessionmaker[Session]]]:
    """Two sessionmakers on two separate engines: two processes' worth of connections."""
    engines = [make_engine(database_url) for _ in range(2)]
    yield [session_factory(engine) for engine in engines]
    for engine in engines:
        engine.dispose()


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in parallel threads released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result(timeout=120) for future in [pool.submit(run, call) for call in calls]]


def _running_job(maker: sessionmaker[Session], images: int, batch_size: int) -> tuple[int, list[int]]:
    with maker.begin() as session:
        job_id = create_random_job(session=session).id
        mark_planning(session=session, job_id=job_id)
        batch_ids = plan_random_images(session=session, job_id=job_id, count=images, batch_size=batch_size)
        finish_planning(session=session, job_id=job_id, total=images, skipped={})
    return job_id, batch_ids


def test_an_idempotency_key_raced_by_two_submissions_gives_one_job(
    two_writers: list[sessionmaker[Session]],
) -> None:
    def submit(maker: sessionmaker[Session], key: str) -> tuple[int, bool]:
        with maker.begin() as session:
            job, created = create_job(
                session=session,
                source="ward",
                source_kind="folder",
                source_path="/archive/ward",
                submitted_by="t",
                model_version="v",
                threshold=0.5,
                batch_size=8,
                idempotency_key=key,
            )
            return job.id, created

    for n in range(REPETITIONS):
        (id_a, created_a), (id_b, created_b) = race(*(partial(submit, m, f"key-{n}") for m in two_writers))
        assert id_a == id_b and sorted([created_a, created_b]) == [False, True]
    with two_writers[0]() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == REPETITIONS


def _upsert(maker: sessionmaker[Session], job_id: int, batch_id: int, results: list[ScoredImage]) -> None:
    with maker.begin() as session:
        record_results(session=session, job_id=job_id, batch_id=batch_id, results=results)


def test_two_workers_upserting_the_same_batch_leave_one_row_per_image(
    two_writers: list[sessionmaker[Session]],
) -> None:
    job_id, batch_ids = _running_job(two_writers[0], 64 * 5, 64)
    for batch_id in batch_ids:
        with two_writers[0]() as session:
            relpaths = session.scalars(select(ImageResult.relpath).where(ImageResult.batch_id == batch_id))
            results = [ScoredImage(relpath, 0.75, True) for relpath in relpaths]

        race(*(partial(_upsert, m, job_id, batch_id, results) for m in two_writers))
    with two_writers[0]() as session:
        by_status = select(ImageResult.status, func.count()).group_by(ImageResult.status)
        assert [tuple(row) for row in session.execute(by_status)] == [("scored", 64 * 5)]


def test_a_batch_delivered_twice_is_claimed_by_one_worker(two_writers: list[sessionmaker[Session]]) -> None:
    _, batch_ids = _running_job(two_writers[0], 4 * REPETITIONS, 4)

    def claim(maker: sessionmaker[Session], batch_id: int) -> bool:
        with maker.begin() as session:
            return claim_batch(session=session, batch_id=batch_id, worker="w") is not None

    for batch_id in batch_ids:
        assert sorted(race(*(partial(claim, m, batch_id) for m in two_writers))) == [False, True]


def _last_batch(maker: sessionmaker[Session], job_id: int, batch_id: int) -> bool:
    with maker.begin() as session:
        finish_batch(session=session, batch_id=batch_id, seconds=0.1)
    with maker.begin() as session:  # the caller commits its batch first, then tries to finish the job
        return finish_job_if_complete(session=session, job_id=job_id)


def test_the_job_finishes_exactly_once_when_its_last_two_batches_finish_together(
    two_writers: list[sessionmaker[Session]],
) -> None:
    rng = random.Random(7)
    for _ in range(REPETITIONS):
        job_id, batch_ids = _running_job(two_writers[0], 8, 4)
        with two_writers[0].begin() as session:
            for batch_id in batch_ids:
                claim_batch(session=session, batch_id=batch_id, worker="w")
                record_results(
                    session=session,
                    job_id=job_id,
                    batch_id=batch_id,
                    results=[
                        ScoredImage(f"scan-{i:06d}.png", rng.random(), rng.random() < 0.5) for i in range(8)
                    ],
                )

        won = race(*(partial(_last_batch, m, job_id, b) for m, b in zip(two_writers, batch_ids, strict=True)))
        assert sorted(won) == [False, True]
        with two_writers[0]() as session:
            job = get_job(session=session, job_id=job_id)
            assert job is not None and job.status == "succeeded" and job.finished_at is not None
