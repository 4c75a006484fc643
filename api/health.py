"""Liveness (/healthz, no auth), readiness (/readyz: database and broker) and Prometheus /metrics."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.context import celery, sessions
from db.models import JOB_STATUSES, Batch, Job
from db.progress import count_where
from worker.celery_app import PLAN_QUEUE, SCORE_QUEUE
from worker.enqueue import queue_depth

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)
BATCH_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)  # a 256-image batch takes ~2 s on 2 cores
BROKER_TIMEOUT_S = 3


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and serving (no auth, no dependencies checked)."""
    return jsonify({"status": "ok"})


def _database_error() -> str | None:
    try:
        with sessions(read_only=True)() as session:
            session.execute(select(func.count()).select_from(Job)).scalar_one()
    except Exception as exc:
        log.warning("readiness: database unreachable: %s", exc)
        return f"database unreachable: {exc.__class__.__name__}"
    return None


def _queue_depths() -> dict[str, int] | None:
    """Messages waiting per queue, or None when the broker cannot be reached."""
    app = celery()
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_S
            )
        return {queue: queue_depth(app, queue) for queue in (PLAN_QUEUE, SCORE_QUEUE)}
    except Exception as exc:
        log.warning("readiness: broker unreachable: %s", exc)
        return None


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when the database and the broker answer; 503 saying which does not."""
    checks = {
        "database": _database_error() or "ok",
        "broker": "ok" if _queue_depths() is not None else "broker unreachable",
    }
    ready = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503


def _metric(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value}" for labels, value in samples]


def _batch_histogram(session: Session) -> list[tuple[str, Any]]:
    timed = Batch.seconds.is_not(None)
    row = session.execute(
        select(
            *(count_where(Batch.seconds <= bound) for bound in BATCH_SECONDS_BUCKETS),
            func.count(Batch.seconds),
            func.coalesce(func.sum(Batch.seconds), 0.0),
        ).where(timed)
    ).one()
    buckets = [
        (f'_bucket{{le="{bound}"}}', int(n)) for bound, n in zip(BATCH_SECONDS_BUCKETS, row, strict=False)
    ]
    count, total = int(row[-2]), float(row[-1])
    return [*buckets, ('_bucket{le="+Inf"}', count), ("_sum", total), ("_count", count)]


@bp.get("/metrics")
def metrics() -> Response:
    """Jobs by status, images scored and failed, batch durations, queue depths (Prometheus text)."""
    lines: list[str] = []
    with sessions(read_only=True)() as session:
        counts = session.execute(select(Job.status, func.count()).group_by(Job.status))
        by_status = {status: int(n) for status, n in counts}
        scored, failed = session.execute(
            select(func.coalesce(func.sum(Batch.scored), 0), func.coalesce(func.sum(Batch.failed), 0))
        ).one()
        histogram = _batch_histogram(session)
    _metric(
        lines,
        "brainscan_jobs",
        "gauge",
        "Jobs by status.",
        [(f'{{status="{status}"}}', by_status.get(status, 0)) for status in JOB_STATUSES],
    )
    _metric(lines, "brainscan_images_scored_total", "counter", "Images scored.", [("", int(scored))])
    _metric(
        lines,
        "brainscan_image_errors_total",
        "counter",
        "Images that could not be scored.",
        [("", int(failed))],
    )
    name = "brainscan_batch_duration_seconds"
    lines += [f"# HELP {name} Seconds a worker spent on a batch.", f"# TYPE {name} histogram"]
    lines += [f"{name}{suffix} {value}" for suffix, value in histogram]
    depths = _queue_depths()
    _metric(
        lines, "brainscan_broker_up", "gauge", "Whether the broker answered.", [("", int(depths is not None))]
    )
    if depths is not None:
        _metric(
            lines,
            "brainscan_queue_depth",
            "gauge",
            "Messages waiting in a queue.",
            [(f'{{queue="{queue}"}}', depth) for queue, depth in depths.items()],
        )
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
