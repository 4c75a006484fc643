"""Review: the queue's order and sample, verdicts replacing verdicts, and honest estimates."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.batches import claim_batch
from db.jobs import finish_planning, mark_planning
from db.models import ImageResult
from db.reviews import Proportion, record_review, review_queue, reviewed_figures
from tests.dbfixtures import create_random_job, plan_random_images, score_randomly

Maker = sessionmaker[Session]
IMAGES = 3000


def _scored_job(maker: Maker) -> int:
    with maker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        batch_ids = plan_random_images(session=session, job_id=job.id, count=IMAGES, batch_size=500)
        finish_planning(session=session, job_id=job.id, total=IMAGES, skipped={})
        for batch_id in batch_ids:
            claim_batch(session=session, batch_id=batch_id, worker="w")
            score_randomly(
                session=session, job_id=job.id, batch_id=batch_id, rng=random.Random(batch_id), error_rate=0
            )
    return job.id


def _truth(image: ImageResult) -> str:
    """A tumour when the score is above 0.3, bar every tenth image: some unflagged images hold
    tumours (missed) and some flagged ones none (false alarms)."""
    tumour = (image.probability or 0) > 0.3
    return "tumour" if tumour != (image.id % 10 == 0) else "no tumour"


def test_reviewing_the_queue_estimates_recall_and_specificity_within_their_intervals(
    db_sessionmaker: Maker,
) -> None:
    job_id = _scored_job(db_sessionmaker)
    with db_sessionmaker() as session:
        queue = review_queue(session=session, job_id=job_id, limit=IMAGES)
        every = list(session.scalars(select(ImageResult).where(ImageResult.job_id == job_id)))
    flagged = [r for r in queue if r.flagged]
    sample = [r for r in queue if not r.flagged]
    assert [r.probability for r in flagged] == sorted((r.probability for r in flagged), reverse=True)
    unflagged = sum(not r.flagged for r in every)
    assert len(flagged) == IMAGES - unflagged and 0.01 * unflagged < len(sample) < 0.03 * unflagged
    with db_sessionmaker.begin() as session:
        for r in queue:
            assert record_review(
                session=session, job_id=job_id, result_id=r.id, verdict=_truth(r), reviewer="user:rad"
            )
    with db_sessionmaker() as session:
        figures = reviewed_figures(session=session, job_id=job_id)
        assert review_queue(session=session, job_id=job_id, limit=10) == []  # all reviewed
    truth = {r.id: _truth(r) == "tumour" for r in every}
    tumours = sum(truth.values())
    recall = sum(truth[r.id] for r in every if r.flagged) / tumours
    specificity = sum(not truth[r.id] for r in every if not r.flagged) / (IMAGES - tumours)
    low, high = figures["recall"]["interval"]
    assert low <= recall <= high and high - low < 0.4
    low, high = figures["specificity"]["interval"]
    assert low <= specificity <= high
    assert figures["reviewed"]["tp"] + figures["reviewed"]["fp"] == len(flagged)


def test_a_new_verdict_replaces_the_old_and_unsure_counts_nowhere(db_sessionmaker: Maker) -> None:
    job_id = _scored_job(db_sessionmaker)
    with db_sessionmaker.begin() as session:
        (first,) = review_queue(session=session, job_id=job_id, limit=1)
        record_review(
            session=session, job_id=job_id, result_id=first.id, verdict="no tumour", reviewer="user:a"
        )
        record_review(session=session, job_id=job_id, result_id=first.id, verdict="unsure", reviewer="user:b")
        assert not record_review(
            session=session, job_id=job_id + 1, result_id=first.id, verdict="tumour", reviewer="x"
        )
        with pytest.raises(ValueError, match="verdict must be one of"):
            record_review(session=session, job_id=job_id, result_id=first.id, verdict="maybe", reviewer="x")
    with db_sessionmaker() as session:
        figures = reviewed_figures(session=session, job_id=job_id)
    assert figures["unsure"] == 1 and sum(figures["reviewed"].values()) == 0
    assert figures["recall"] is None  # nothing reviewed in either stratum yet


def test_clopper_pearson_intervals() -> None:
    assert Proportion(0, 10).interval == (0.0, pytest.approx(0.3085, abs=1e-4))
    assert Proportion(10, 10).interval == (pytest.approx(0.6915, abs=1e-4), 1.0)
    low, high = Proportion(5, 10).interval
    assert low == pytest.approx(0.1871, abs=1e-4) and high == pytest.approx(0.8129, abs=1e-4)
