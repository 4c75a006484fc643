"""Per-image results: idempotent upserts, what is left to score, filtered listings that use their indexes."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from db.batches import claim_batch
from db.jobs import finish_planning, mark_planning
from db.models import Batch, ImageResult
from db.results import ScoredImage, iter_results, list_results, pending_images, record_results
from tests.dbfixtures import create_random_job, plan_random_images, score_randomly

Maker = sessionmaker[Session]


def _planned(maker: Maker, images: int, batch_size: int) -> tuple[int, list[int]]:
    with maker.begin() as session:
        job = create_random_job(session=session)
        mark_planning(session=session, job_id=job.id)
        batch_ids = plan_random_images(session=session, job_id=job.id, count=images, batch_size=batch_size)
        finish_planning(session=session, job_id=job.id, total=images, skipped={})
        for batch_id in batch_ids:
            claim_batch(session=session, batch_id=batch_id, worker="w")
    return job.id, batch_ids


def _snapshot(session: Session) -> list[tuple[Any, ...]]:
    columns = [c for c in ImageResult.__table__.columns]
    return [tuple(row) for row in session.execute(select(*columns).order_by(ImageResult.id))]


def test_recording_the_same_results_again_changes_nothing(db_sessionmaker: Maker) -> None:
    job_id, (batch_id,) = _planned(db_sessionmaker, 50, 50)
    with db_sessionmaker.begin() as session:
        results = score_randomly(session=session, job_id=job_id, batch_id=batch_id, rng=random.Random(4))
    with db_sessionmaker() as session:
        before = _snapshot(session)
    with db_sessionmaker.begin() as session:
        record_results(session=session, job_id=job_id, batch_id=batch_id, results=results)
    with db_sessionmaker() as session:
        assert _snapshot(session) == before and len(before) == 50
        status = [c.name for c in ImageResult.__table__.columns].index("status")
        assert {row[status] for row in before} == {"scored", "error"}  # both kinds were re-recorded


def test_the_first_score_wins_and_an_error_is_replaced_by_a_score(db_sessionmaker: Maker) -> None:
    job_id, (batch_id,) = _planned(db_sessionmaker, 2, 2)
    first = [
        ScoredImage("scan-000000.png", 0.8, True, content_hash="a" * 64),
        ScoredImage("scan-000001.png", None, None, error="truncated file"),
    ]
    second = [
        ScoredImage("scan-000000.png", None, None, error="disk hiccup"),
        ScoredImage("scan-000001.png", 0.1, False, content_hash="b" * 64),
    ]
    with db_sessionmaker.begin() as session:
        record_results(session=session, job_id=job_id, batch_id=batch_id, results=first)
    with db_sessionmaker.begin() as session:
        record_results(session=session, job_id=job_id, batch_id=batch_id, results=second)
    with db_sessionmaker() as session:
        rows = session.execute(
            select(
                ImageResult.relpath,
                ImageResult.status,
                ImageResult.probability,
                ImageResult.content_hash,
                ImageResult.error,
            ).order_by(ImageResult.id)
        )
        assert [tuple(r) for r in rows] == [
            ("scan-000000.png", "scored", 0.8, "a" * 64, None),
            ("scan-000001.png", "scored", 0.1, "b" * 64, None),
        ]


def test_out_of_distribution_is_kept_per_image_and_counted_per_batch(db_sessionmaker: Maker) -> None:
    """An unflagged image beyond the model's threshold is `not assessed`; batches count them, and
    a model without a reference leaves the count null (not 0: nothing was measured)."""
    from api.job_report import assessment
    from db.batches import finish_batch, job_score_histogram

    job_id, (measured, unmeasured) = _planned(db_sessionmaker, 4, 2)
    with db_sessionmaker.begin() as session:
        pending = [i.relpath for i in pending_images(session=session, batch_id=measured)]
        results = [
            ScoredImage(pending[0], 0.9, True, ood_distance=40.0, out_of_distribution=True),
            ScoredImage(pending[1], 0.1, False, ood_distance=41.0, out_of_distribution=True),
        ]
        record_results(session=session, job_id=job_id, batch_id=measured, results=results)
        finish_batch(session=session, batch_id=measured, seconds=1.0)
        plain = [
            ScoredImage(i.relpath, 0.2, False) for i in pending_images(session=session, batch_id=unmeasured)
        ]
        record_results(session=session, job_id=job_id, batch_id=unmeasured, results=plain)
        finish_batch(session=session, batch_id=unmeasured, seconds=1.0)
    with db_sessionmaker() as session:
        rows = list_results(session=session, job_id=job_id, limit=10)
        assert [assessment(r) for r in rows] == ["flagged", "not assessed", "not flagged", "not flagged"]
        assert [r.ood_distance for r in rows] == [40.0, 41.0, None, None]
        counts = dict(session.execute(select(Batch.id, Batch.out_of_distribution)).all())
        assert counts == {measured: 2, unmeasured: None}
        assert job_score_histogram(session=session, job_id=job_id)[1:] == (1, 2)


def test_a_result_without_probability_or_reason_is_an_error_and_duplicates_collapse(
    db_sessionmaker: Maker,
) -> None:
    job_id, (batch_id,) = _planned(db_sessionmaker, 2, 2)
    with db_sessionmaker.begin() as session:
        record_results(
            session=session,
            job_id=job_id,
            batch_id=batch_id,
            results=[
                ScoredImage("scan-000000.png", None, None),
                ScoredImage("scan-000001.png", 0.2, False),
                ScoredImage("scan-000001.png", 0.7, True),
                ScoredImage("unplanned.png", 0.4, False),
            ],
        )
    with db_sessionmaker() as session:
        rows = session.execute(
            select(
                ImageResult.relpath,
                ImageResult.status,
                ImageResult.flagged,
                ImageResult.error,
                ImageResult.batch_id,
            ).order_by(ImageResult.id)
        )
        assert [tuple(r) for r in rows] == [
            ("scan-000000.png", "error", None, "no probability was produced", batch_id),
            ("scan-000001.png", "scored", True, None, batch_id),
            ("unplanned.png", "scored", False, None, batch_id),
        ]


def test_pending_images_are_those_not_yet_scored(db_sessionmaker: Maker) -> None:
    job_id, (batch_id,) = _planned(db_sessionmaker, 4, 4)
    with db_sessionmaker.begin() as session:
        record_results(
            session=session,
            job_id=job_id,
            batch_id=batch_id,
            results=[
                ScoredImage("scan-000000.png", 0.9, True),
                ScoredImage("scan-000001.png", None, None, error="x"),
            ],
        )
        pending = pending_images(session=session, batch_id=batch_id)
    assert [p.relpath for p in pending] == ["scan-000001.png", "scan-000002.png", "scan-000003.png"]


FILTERS: list[dict[str, Any]] = [
    {},
    {"flagged": True},
    {"flagged": False},
    {"false_negatives": True},
    {"errors": True},
]


@pytest.mark.parametrize("filters", FILTERS, ids=["all", "flagged", "unflagged", "false-negatives", "errors"])
def test_listings_page_through_exactly_the_matching_results(
    db_sessionmaker: Maker, filters: dict[str, Any]
) -> None:
    rng = random.Random(11)
    job_id, batch_ids = _planned(db_sessionmaker, 300, 64)
    other_job, other_batches = _planned(db_sessionmaker, 10, 10)  # must never show up
    with db_sessionmaker.begin() as session:
        for batch_id in batch_ids:
            score_randomly(session=session, job_id=job_id, batch_id=batch_id, rng=rng, error_rate=0.2)
        score_randomly(session=session, job_id=other_job, batch_id=other_batches[0], rng=rng)
    with db_sessionmaker() as session:
        every = session.scalars(
            select(ImageResult).where(ImageResult.job_id == job_id).order_by(ImageResult.id)
        )
        expected = [r.id for r in every if _matches(r, filters)]
        pages: list[int] = []
        after = None
        while page := list_results(session=session, job_id=job_id, limit=40, after_id=after, **filters):
            pages.extend(r.id for r in page)
            after = page[-1].id
        streamed = [r.id for r in iter_results(session=session, job_id=job_id, **filters)]
    assert pages == streamed == expected and expected


def _matches(result: ImageResult, filters: dict[str, Any]) -> bool:
    if "flagged" in filters and result.flagged is not filters["flagged"]:
        return False
    if filters.get("false_negatives") and not (result.label == 1 and result.flagged is False):
        return False
    return not (filters.get("errors") and result.status != "error")


PARTIAL_INDEXES = [
    ({"flagged": True}, "ix_image_results_flagged"),
    ({"false_negatives": True}, "ix_image_results_false_negatives"),
    ({"errors": True}, "ix_image_results_errors"),
]


@pytest.mark.parametrize(("filters", "index"), PARTIAL_INDEXES)
def test_filtered_listings_can_use_their_partial_index(
    db_engine: Engine, filters: dict[str, Any], index: str
) -> None:
    seen: list[tuple[str, Any]] = []
    listen = lambda *args: seen.append((args[2], args[3]))  # noqa: E731  (statement, parameters)
    event.listen(db_engine, "before_cursor_execute", listen)
    with Session(db_engine) as session:
        list_results(session=session, job_id=1, **filters)
    event.remove(db_engine, "before_cursor_execute", listen)
    statement, parameters = seen[-1]
    with db_engine.begin() as connection:
        if db_engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL enable_seqscan = off"))  # the table is empty
            plan = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars().all()
        else:
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = [row[-1] for row in rows]
    assert index in "\n".join(map(str, plan))
