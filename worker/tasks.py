"""Celery tasks: arguments are ids, never objects; every task has a name and a time limit.

The time limits are set in one place, worker/celery_app.py (task_annotations, from the settings:
BRAINSCAN_BATCH_SOFT_TIME_LIMIT and BRAINSCAN_BATCH_TIME_LIMIT for a batch), not here.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError, OperationalError

from brainscan.keys import patient_hash_key
from worker import planning, pull, scoring
from worker.celery_app import PLAN_TASK, SCORE_TASK, settings_of
from worker.enqueue import enqueue_batches, send_batches
from worker.process import process_scorer, process_sessions, stopping, worker_name

log = logging.getLogger(__name__)
TRANSIENT = (OperationalError, BrokerError, RedisConnectionError, ConnectionError)
MAX_RETRIES = 10  # with backoff capped at 30 s: rides out a database or broker outage of minutes


def backoff(retries: int) -> int:
    """Seconds before retry n: 1, 2, 4, ... capped at 30."""
    return int(min(30, 2**retries))


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _is_retryable(exc: BaseException) -> bool:
    return _is_transient(exc) or isinstance(exc, SoftTimeLimitExceeded | scoring.ModelMismatch)


@shared_task(name=PLAN_TASK, bind=True, max_retries=MAX_RETRIES)
def plan_job(self: Task, job_id: int) -> int:
    """Walk the job's source, record its images in batches and enqueue them."""
    settings = settings_of(self.app)
    sessions = process_sessions(settings)
    try:
        stat = planning.is_stat(sessions, job_id)  # its batches go to the stat queue
        return planning.plan(
            job_id,
            sessions=sessions,
            enqueue=lambda ids: enqueue_batches(self.app, ids, stat=ids if stat else ()),
            roots=settings.source_roots,
            patient_key=patient_hash_key(settings),
            fetch=lambda pull_, folder: pull.retrieve(pull_, folder, settings=settings),
        )
    except Exception as exc:
        if _is_transient(exc) and self.request.retries < MAX_RETRIES:
            log.warning("job %s: planning hit %s; retrying", job_id, exc)
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        _fail_job(settings, job_id, f"planning failed: {type(exc).__name__}: {exc}")
        raise


@shared_task(name=SCORE_TASK, bind=True, max_retries=MAX_RETRIES)
def score_batch(self: Task, batch_id: int) -> str:
    """Score one batch; transient failures retry (the same task may take its batch back)."""
    settings = settings_of(self.app)
    sessions = process_sessions(settings)
    if stopping():  # this worker is shutting down: leave the batch to another
        send_batches(self.app, sessions, [batch_id])
        return "handed back"
    try:
        outcome = scoring.score(
            batch_id,
            sessions=sessions,
            scorer=process_scorer(settings),
            worker=worker_name(self.request.id, self.request.hostname),
            max_attempts=settings.max_batch_attempts,
            roots=settings.source_roots,
            lease=settings.batch_lease,
            stopping=stopping,
        )
        if outcome == "handed back":
            send_batches(self.app, sessions, [batch_id])
        return outcome
    except Exception as exc:
        if isinstance(exc, SoftTimeLimitExceeded | scoring.ModelMismatch):
            _requeue(
                sessions, batch_id, f"{type(exc).__name__}: {exc}"
            )  # any worker (with the model) may take it
        if _is_retryable(exc) and self.request.retries < MAX_RETRIES:
            log.warning("batch %s: %s: %s; retrying", batch_id, type(exc).__name__, exc)
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        _give_up(sessions, batch_id, f"{type(exc).__name__}: {exc}")
        raise


def _requeue(sessions: Any, batch_id: int, because: str) -> None:
    from db.batches import requeue_batch

    with sessions.begin() as session:
        requeue_batch(session=session, batch_id=batch_id, because=because)


def _give_up(sessions: Any, batch_id: int, error: str) -> None:
    from db.models import Batch

    with sessions() as session:
        batch = session.get(Batch, batch_id)
        job_id = batch.job_id if batch is not None else None
    if job_id is not None:
        scoring.give_up(sessions, batch_id, job_id, error)


def _fail_job(settings: Any, job_id: int, error: str) -> None:
    from db.jobs import fail_job

    try:
        with process_sessions(settings).begin() as session:
            fail_job(session=session, job_id=job_id, error=error)
    except Exception:  # the database itself may be what failed; the watchdog tries again later
        log.exception("job %s: could not record the failure", job_id)
