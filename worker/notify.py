"""Webhooks: when a job ends, POST what happened to BRAINSCAN_WEBHOOK_URL, signed, retried.

The job's end is written to the outbox (db.notifications) in the transaction that ends it; the
workers' watchdog sends what is due on each sweep. The body is JSON: the event (`job.succeeded`,
`job.failed`, `job.cancelled`), the job's id, status, counts, matrix, recall and specificity,
its studies counted, its drift status and its API path. No patient identifier, and not the
source folder's name (which an export may have named after a patient). Headers:
`X-Brainscan-Event`, `X-Brainscan-Delivery` (the notification id: a receiver drops repeats),
`X-Brainscan-Timestamp` (Unix seconds) and `X-Brainscan-Signature: sha256=<hex>`, the
HMAC-SHA256 with BRAINSCAN_WEBHOOK_SECRET of `<timestamp>.<body>`. A 2xx answer delivers it;
anything else is tried again after 30 s, 1, 2, 4 ... minutes (at most an hour apart), and given
up after MAX_ATTEMPTS; each notification's state is in the job's JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from db.jobs import get_job
from db.models import Notification, utcnow
from db.outbox import claim_due, describe_wait, mark_sent, record_failure
from db.progress import job_progress

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 10
TIMEOUT = 10.0  # seconds a receiver may take to answer


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Brainscan-Signature value of a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def payload(session: Session, notification: Notification) -> dict[str, Any]:
    job = get_job(session=session, job_id=notification.job_id)
    assert job is not None
    progress = job_progress(session=session, job_id=job.id)
    matrix = None if job.tp is None else {"tp": job.tp, "fp": job.fp, "tn": job.tn, "fn": job.fn}
    return {
        "event": notification.event,
        "delivery": notification.id,
        "job": {
            "id": job.id,
            "status": job.status,
            "path": f"/api/v1/jobs/{job.id}",
            "model_version": job.model_version,
            "threshold": job.threshold,
            "priority": job.priority,
            "total": progress.total,
            "scored": progress.scored,
            "failed": progress.failed,
            "flagged": progress.flagged,
            "confusion": matrix,
            "recall": job.recall,
            "specificity": job.specificity,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "error": job.error,
        },
    }


def deliver_due(*, sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None) -> int:
    """Send every notification due; returns how many were delivered. Nothing without a URL."""
    if not settings.webhook_url:
        return 0
    now = now or utcnow()
    with sessions.begin() as session:
        due = claim_due(session=session, model=Notification, now=now)
        bodies = [(n.id, n.event, n.attempts, payload(session, n)) for n in due]
    delivered = 0
    for notification_id, event, attempts, body in bodies:
        error = _post(settings, notification_id, event, json.dumps(body, sort_keys=True).encode())
        with sessions.begin() as session:
            if error is None:
                mark_sent(session=session, model=Notification, row_id=notification_id, now=utcnow())
                delivered += 1
            else:
                wait = record_failure(
                    session=session,
                    model=Notification,
                    row_id=notification_id,
                    attempts=attempts,
                    error=error,
                    max_attempts=MAX_ATTEMPTS,
                    now=utcnow(),
                )
                log.warning(
                    "webhook %s for %s failed (%s); %s", notification_id, event, error, describe_wait(wait)
                )
    return delivered


def _post(settings: Settings, notification_id: int, event: str, body: bytes) -> str | None:
    """None when the receiver answered 2xx, else why not."""
    stamp = str(int(time.time()))
    request = urllib.request.Request(
        settings.webhook_url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "brainscan-webhook",
            "X-Brainscan-Event": event,
            "X-Brainscan-Delivery": str(notification_id),
            "X-Brainscan-Timestamp": stamp,
            "X-Brainscan-Signature": signature(settings.webhook_secret, stamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"not reached: {getattr(exc, 'reason', exc)}"
