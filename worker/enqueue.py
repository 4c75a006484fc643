"""Send work to the queues by task name: callers (the API, the planner) never import task code."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from celery import Celery
from kombu.exceptions import ChannelError
from sqlalchemy.orm import Session, sessionmaker

from db.jobs import stat_batch_ids
from worker.celery_app import PLAN_QUEUE, PLAN_TASK, SCORE_QUEUE, SCORE_TASK, STAT_QUEUE


def submit_job(app: Celery, job_id: int) -> None:
    """Ask a worker to plan the job: walk its source, record images, cut and enqueue batches."""
    app.send_task(PLAN_TASK, args=[job_id], queue=PLAN_QUEUE)


def enqueue_batches(app: Celery, batch_ids: Iterable[int], *, stat: Collection[int] = ()) -> int:
    """One score_batch message per batch, those in `stat` (batches of stat jobs) to the stat
    queue; returns how many were sent."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for batch_id in batch_ids:
            queue = STAT_QUEUE if batch_id in stat else SCORE_QUEUE
            app.send_task(SCORE_TASK, args=[batch_id], queue=queue, producer=producer)
            sent += 1
    return sent


def send_batches(app: Celery, sessions: sessionmaker[Session], batch_ids: Iterable[int]) -> int:
    """enqueue_batches, each batch to its job's queue (looked up: stat or routine)."""
    ids = list(batch_ids)
    if not ids:
        return 0
    with sessions() as session:
        stat = stat_batch_ids(session=session, batch_ids=ids)
    return enqueue_batches(app, ids, stat=stat)


def queue_depth(app: Celery, queue: str) -> int:
    """Messages waiting in a queue (not those a worker holds); works for Redis and files."""
    with app.connection_for_write() as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError:  # Redis deletes an empty list: a queue never used or drained
            return 0
