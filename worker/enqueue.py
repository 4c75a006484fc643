"""Send work to the queues by task name: callers (the API, the planner) never import task code."""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery
from kombu.exceptions import ChannelError

from worker.celery_app import PLAN_QUEUE, PLAN_TASK, SCORE_QUEUE, SCORE_TASK


def submit_job(app: Celery, job_id: int) -> None:
    """Ask a worker to plan the job: walk its source, record images, cut and enqueue batches."""
    app.send_task(PLAN_TASK, args=[job_id], queue=PLAN_QUEUE)


def enqueue_batches(app: Celery, batch_ids: Iterable[int]) -> int:
    """One score_batch message per batch; returns how many were sent."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for batch_id in batch_ids:
            app.send_task(SCORE_TASK, args=[batch_id], queue=SCORE_QUEUE, producer=producer)
            sent += 1
    return sent


def queue_depth(app: Celery, queue: str) -> int:
    """Messages waiting in a queue (not those a worker holds); works for Redis and files."""
    with app.connection_for_write() as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError:  # Redis deletes an empty list: a queue never used or drained
            return 0
