"""Liveness (/healthz, no auth), the favicon, readiness (/readyz: database, broker), Prometheus /metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from flask import Blueprint, Response, jsonify, redirect, url_for
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WerkzeugResponse

from api.context import celery, sessions
from db.model_versions import current_model_version
from db.models import JOB_STATUSES, Batch, Job, utcnow
from db.progress import count_where
from db.sites import site_histograms
from training.drift import drift
from worker.celery_app import PLAN_QUEUE, SCORE_QUEUE, STAT_QUEUE
from worker.enqueue import queue_depth

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)
BATCH_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)  # a 256-image batch takes ~2 s on 2 cores
BROKER_TIMEOUT_S = 3
SITE_WINDOW = timedelta(days=7)  # a site's score shift is measured over its recent images


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and serving (no auth, no dependencies checked)."""
    return jsonify({"status": "ok"})


@bp.get("/favicon.ico")
def favicon() -> WerkzeugResponse:
    """Browsers and bookmark tools ask here whatever the page says: the SVG icon (no auth)."""
    return redirect(url_for("static", filename="favicon.svg"), 301)


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
        return {queue: queue_depth(app, queue) for queue in (PLAN_QUEUE, STAT_QUEUE, SCORE_QUEUE)}
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


class ServiceCollector(Collector):
    """Metrics read from SQL and the broker at scrape time: the state lives there, shared by every
    API and worker process, so no process keeps counters of its own (nor needs prometheus-client's
    multiprocess mode)."""

    def collect(self) -> Iterator[Metric]:
        with sessions(read_only=True)() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            scored, failed = session.execute(
                select(func.coalesce(func.sum(Batch.scored), 0), func.coalesce(func.sum(Batch.failed), 0))
            ).one()
            buckets, total = _batch_histogram(session)
            sites = _site_shift(session)
        jobs = GaugeMetricFamily("brainscan_jobs", "Jobs by status.", labels=["status"])
        for status in JOB_STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield CounterMetricFamily("brainscan_images_scored", "Images scored.", value=int(scored))
        yield CounterMetricFamily(
            "brainscan_image_errors", "Images that could not be scored.", value=int(failed)
        )
        yield HistogramMetricFamily(
            "brainscan_batch_duration_seconds",
            "Seconds a worker spent on a batch.",
            buckets=buckets,
            sum_value=total,
        )
        yield from sites
        depths = _queue_depths()
        yield GaugeMetricFamily(
            "brainscan_broker_up", "Whether the broker answered.", value=int(depths is not None)
        )
        if depths is not None:
            queues = GaugeMetricFamily(
                "brainscan_queue_depth", "Messages waiting in a queue.", labels=["queue"]
            )
            for queue, depth in depths.items():
                queues.add_metric([queue], depth)
            yield queues


def _site_shift(session: Session) -> list[Metric]:
    """Per site, over the last SITE_WINDOW of the current model's scores: score shift (PSI against
    the card's reference), flag rate and images, as gauges."""
    model = current_model_version(session=session)
    if model is None:
        return []
    since = utcnow() - SITE_WINDOW
    histograms = site_histograms(session=session, model_version=model.version, since=since)
    labels = ["site"]
    psi = GaugeMetricFamily("brainscan_site_score_shift", "PSI of a site's recent scores.", labels=labels)
    rate = GaugeMetricFamily(
        "brainscan_site_flag_rate", "Share of a site's recent images flagged.", labels=labels
    )
    images = GaugeMetricFamily("brainscan_site_images", "A site's images scored recently.", labels=labels)
    beyond = GaugeMetricFamily(
        "brainscan_site_out_of_distribution",
        "Share of a site's recent images unlike the model's training images (not assessed).",
        labels=labels,
    )
    reference = (model.card or {}).get("reference")
    for site, (counts, flagged, ood) in sorted(histograms.items()):
        shift = drift(reference, counts, flagged, ood)
        if shift["psi"] is not None:
            psi.add_metric([site], shift["psi"])
        if shift["out_of_distribution"] is not None:
            beyond.add_metric([site], shift["out_of_distribution"])
        rate.add_metric([site], shift["flag_rate"] or 0.0)
        images.add_metric([site], shift["images"])
    return [psi, rate, images, beyond]


def _batch_histogram(session: Session) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (upper bound, batches) pairs of batch durations, ending at +Inf, and their sum."""
    row = session.execute(
        select(
            *(count_where(Batch.seconds <= bound) for bound in BATCH_SECONDS_BUCKETS),
            func.count(Batch.seconds),
            func.coalesce(func.sum(Batch.seconds), 0.0),
        ).where(Batch.seconds.is_not(None))
    ).one()
    buckets = [(str(bound), int(n)) for bound, n in zip(BATCH_SECONDS_BUCKETS, row, strict=False)]
    return [*buckets, ("+Inf", int(row[-2]))], float(row[-1])


@bp.get("/metrics")
def metrics() -> Response:
    """Jobs by status, images scored and failed, batch durations, queue depths (Prometheus text)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector())
    return Response(generate_latest(registry), mimetype="text/plain", content_type=CONTENT_TYPE_LATEST)
