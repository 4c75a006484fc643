"""The watchdog: finds work that a lost message or a dead worker stranded, and sends it again.

A running batch is taken back as soon as its lease lapses (its worker renews it every third of
BRAINSCAN_BATCH_LEASE while alive), so a killed worker costs the lease plus one watchdog period,
not the batch's time limit.

Everything it does is safe to repeat and safe to run in several workers at once: claiming a
batch is atomic, scoring is an idempotent upsert, and a job finishes exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from db.batches import (
    fail_batch,
    lapsed_batches,
    requeue_batch,
    stale_queued_batches,
    stale_running_batches,
)
from db.jobs import stalled_jobs, unfinished_running_jobs
from db.models import Batch, utcnow
from db.progress import finish_job_if_complete
from worker import notify, pacs
from worker.celery_app import PLAN_QUEUE, SCORE_QUEUE, STAT_QUEUE
from worker.enqueue import queue_depth, send_batches, submit_job
from worker.retention import prune_received, prune_to_quota, prune_uploads

log = logging.getLogger(__name__)
GRACE = 60  # at most this many seconds past the hard time limit before a batch counts as abandoned
LOST_WORKER = "its worker stopped renewing its lease (killed, frozen or cut off)"
LOST_MESSAGE = "its queue message was lost (the queue was empty while it waited)"
PLAN_STALL = 60  # seconds without a planner heartbeat (every 10 s) before a planning job counts as lost


@dataclass
class SweepReport:
    resent_batches: list[int] = field(default_factory=list)
    failed_batches: list[int] = field(default_factory=list)
    resent_jobs: list[int] = field(default_factory=list)
    finished_jobs: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any((self.resent_batches, self.failed_batches, self.resent_jobs, self.finished_jobs))


def sweep(*, app: Celery, sessions: sessionmaker[Session], settings: Settings) -> SweepReport:
    """One pass: abandoned running batches, lost queued batches and jobs, unfinished jobs."""
    report = SweepReport()
    now = utcnow()
    grace = min(GRACE, settings.batch_time_limit)
    abandoned_before = now - timedelta(seconds=settings.batch_time_limit + grace)
    with sessions() as session:  # a lapsed lease at once; a batch claimed before leases by its age
        lapsed = lapsed_batches(session=session, now=now)
        aged = stale_running_batches(session=session, started_before=abandoned_before)
    for batch_id in sorted(set(lapsed) | set(aged)):
        _recover_running(sessions, batch_id, settings.max_batch_attempts, report)
    lost_before = now - timedelta(seconds=settings.requeue_after)
    if (
        queue_depth(app, SCORE_QUEUE) == queue_depth(app, STAT_QUEUE) == 0
    ):  # none waiting, yet some queued: lost
        with sessions.begin() as session:
            for batch_id in stale_queued_batches(session=session, enqueued_before=lost_before):
                if requeue_batch(session=session, batch_id=batch_id, because=LOST_MESSAGE):
                    report.resent_batches.append(batch_id)
    send_batches(app, sessions, report.resent_batches)
    if queue_depth(app, PLAN_QUEUE) == 0:
        with sessions() as session:
            stuck = stalled_jobs(
                session=session,
                queued_before=lost_before,
                planning_before=now - timedelta(seconds=PLAN_STALL),
            )
        for job_id in stuck:
            submit_job(app, job_id)
            report.resent_jobs.append(job_id)
    with sessions() as session:
        running = unfinished_running_jobs(session=session)
    for job_id in running:
        with sessions.begin() as session:
            if finish_job_if_complete(session=session, job_id=job_id):
                report.finished_jobs.append(job_id)
    if report:
        log.warning("watchdog: %s", report)
    return report


def _recover_running(
    sessions: sessionmaker[Session], batch_id: int, max_attempts: int, report: SweepReport
) -> None:
    with sessions.begin() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status != "running":
            return
        if batch.attempts >= max_attempts:
            fail_batch(
                session=session,
                batch_id=batch_id,
                error=f"gave up after {batch.attempts} attempts (the worker was lost each time)",
            )
            report.failed_batches.append(batch_id)
            job_id = batch.job_id
        elif requeue_batch(session=session, batch_id=batch_id, because=LOST_WORKER):
            report.resent_batches.append(batch_id)
            return
        else:
            return
    with sessions.begin() as session:
        finish_job_if_complete(session=session, job_id=job_id)


PRUNE_EVERY = 600  # seconds between looks at the upload folder (worker.retention)
QUOTA_EVERY = 60  # seconds between measures of the disk quota's folders, with a quota


class Watchdog(threading.Thread):
    """Runs `sweep` every settings.watchdog_interval seconds, and prunes uploads now and then,
    until stopped."""

    def __init__(self, *, app: Celery, sessions: sessionmaker[Session], settings: Settings) -> None:
        super().__init__(name="brainscan-watchdog", daemon=True)
        self.app, self.sessions, self.settings = app, sessions, settings
        self.stopped = threading.Event()

    def run(self) -> None:
        pruned_at = measured_at = 0.0
        while not self.stopped.wait(self.settings.watchdog_interval):
            try:
                sweep(app=self.app, sessions=self.sessions, settings=self.settings)
                notify.deliver_due(
                    sessions=self.sessions, settings=self.settings
                )  # webhooks of jobs that ended
                pacs.deliver_due(sessions=self.sessions, settings=self.settings)  # study results to the PACS
                if time.monotonic() - pruned_at > PRUNE_EVERY:
                    prune_uploads(sessions=self.sessions, settings=self.settings)
                    prune_received(sessions=self.sessions, settings=self.settings)
                    pruned_at = time.monotonic()
                if self.settings.disk_quota_gb and time.monotonic() - measured_at > QUOTA_EVERY:
                    prune_to_quota(sessions=self.sessions, settings=self.settings)
                    measured_at = time.monotonic()
            except Exception:  # a database or broker outage: try again next round
                log.exception("watchdog sweep failed; retrying in %ss", self.settings.watchdog_interval)

    def stop(self) -> None:
        self.stopped.set()
