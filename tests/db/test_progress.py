"""Progress and confusion matrices computed in SQL equal a brute-force count of what was recorded."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.batches import claim_batch, fail_batch, finish_batch
from db.jobs import finish_planning, get_job, mark_planning
from db.models import ImageResult
from db.progress import (
    JobProgress,
    finish_job_if_complete,
    job_confusion_from_results,
    job_progress,
    jobs_progress,
)
from db.results import ScoredImage
from tests.dbfixtures import create_random_job, plan_random_images, score_randomly

Maker = sessionmaker[Session]
IMAGES, BATCH = 700, 64


def _matrix(results: list[ScoredImage], labels: dict[str, int | None]) -> tuple[int, int, int, int]:
    scored = [(labels[r.relpath], r.flagged) for r in results if r.error is None]
    tp, fp = scored.count((1, True)), scored.count((0, True))
    return tp, fp, scored.count((0, False)), scored.count((1, False))


InFlight = tuple[int, list[int], dict[int, list[ScoredImage]], dict[str, int | None]]


def _job_in_flight(maker: Maker) -> InFlight:
    """A running job: all batches done but one failed and one still running."""
    rng = random.Random(42)
    with maker.begin() as session:
        job_id = create_random_job(session=session).id
        mark_planning(session=session, job_id=job_id)
        batch_ids = plan_random_images(
            session=session, job_id=job_id, count=IMAGES, batch_size=BATCH, rng=rng
        )
        finish_planning(
            session=session, job_id=job_id, total=IMAGES, skipped={"not an image file (by its name)": 3}
        )
        labels = {r.relpath: r.label for r in session.scalars(select(ImageResult))}
        recorded = {}
        for batch_id in batch_ids:
            claim_batch(session=session, batch_id=batch_id, worker="w")
            recorded[batch_id] = score_randomly(
                session=session, job_id=job_id, batch_id=batch_id, rng=rng, error_rate=0.05
            )
        for batch_id in batch_ids[:-2]:
            finish_batch(session=session, batch_id=batch_id, seconds=1.0)
        fail_batch(session=session, batch_id=batch_ids[-2], error="gave up")
    return job_id, batch_ids, recorded, labels


def test_progress_and_confusion_equal_a_brute_force_count(db_sessionmaker: Maker) -> None:
    job_id, batch_ids, recorded, labels = _job_in_flight(db_sessionmaker)
    done = [r for b in batch_ids[:-2] for r in recorded[b]]
    settled = done + recorded[batch_ids[-2]]
    everything = [r for b in batch_ids for r in recorded[b]]
    with db_sessionmaker() as session:
        progress = job_progress(session=session, job_id=job_id)
        confusion = job_confusion_from_results(session=session, job_id=job_id)
    assert progress == JobProgress(
        total=IMAGES,
        scored=sum(r.error is None for r in settled),
        failed=sum(r.error is not None for r in settled),
        flagged=sum(bool(r.flagged) for r in settled),
        batches_total=len(batch_ids),
        batches_done=len(batch_ids) - 2,
        batches_failed=1,
        **dict(zip(("tp", "fp", "tn", "fn"), _matrix(done, labels), strict=True)),
    )
    assert confusion == _matrix(everything, labels)
    assert progress.remaining == IMAGES - progress.scored - progress.failed > 0


def test_the_job_finishes_once_its_last_batch_settles_with_its_final_figures(db_sessionmaker: Maker) -> None:
    job_id, batch_ids, recorded, labels = _job_in_flight(db_sessionmaker)
    with db_sessionmaker.begin() as session:
        assert not finish_job_if_complete(session=session, job_id=job_id)  # one batch still running
        finish_batch(session=session, batch_id=batch_ids[-1], seconds=1.0)
    with db_sessionmaker.begin() as session:
        assert finish_job_if_complete(session=session, job_id=job_id)
        assert not finish_job_if_complete(session=session, job_id=job_id)
    tp, fp, tn, fn = _matrix([r for b in batch_ids for r in recorded[b]], labels)
    with db_sessionmaker() as session:
        job = get_job(session=session, job_id=job_id)
        assert job is not None and job.status == "failed"
        assert job.error == f"1 of {len(batch_ids)} batches failed: gave up"
        assert (job.tp, job.fp, job.tn, job.fn) == (tp, fp, tn, fn)
        assert job.recall == pytest.approx(tp / (tp + fn))
        assert job.specificity == pytest.approx(tn / (tn + fp))
        assert job.images_per_second is not None and job.images_per_second > 0
        assert job.started_at is not None and job.finished_at is not None and job.finished_at > job.started_at


def test_a_page_of_jobs_reads_each_jobs_progress_in_one_query(db_sessionmaker: Maker) -> None:
    running, _, _, _ = _job_in_flight(db_sessionmaker)
    with db_sessionmaker.begin() as session:
        waiting = create_random_job(session=session).id  # submitted, not planned: no batches yet
    with db_sessionmaker() as session:
        one_by_one = {job_id: job_progress(session=session, job_id=job_id) for job_id in (running, waiting)}
        page = jobs_progress(session=session, job_ids=[waiting, running, 12345])
        assert jobs_progress(session=session, job_ids=[]) == {}
    assert page == one_by_one  # the unknown id is left out
    assert page[waiting].batches_total == 0 and page[running].batches_total > 0


def test_progress_of_an_unknown_job_is_an_error(db_sessionmaker: Maker) -> None:
    with db_sessionmaker() as session, pytest.raises(LookupError):
        job_progress(session=session, job_id=12345)
