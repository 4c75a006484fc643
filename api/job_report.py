"""A job, its batches and its results as the API and the web view show them (plain dicts, JSON-ready)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import url_for
from sqlalchemy.orm import Session

from db.batches import job_score_histogram
from db.deliveries import destination_names, job_deliveries
from db.jobs import FINISHED_JOB_STATUSES, Viewer, get_job
from db.model_versions import model_version_named
from db.models import Batch, ImageResult, Job, ResultDelivery
from db.notifications import job_notifications
from db.progress import JobProgress, job_progress, jobs_progress
from db.results import permanent_errors, unreadable_labelled
from db.series import site_thresholds
from db.studies import FLAGGED, NOT_ASSESSED, StudyVerdict, study_verdicts
from training.drift import drift

RESULT_CSV_COLUMNS = (
    "id",
    "path",
    "label",
    "probability",
    "flagged",
    "status",
    "error",
    "batch_id",
    "frame",  # 1..N for a multi-frame file's frames, 0 for a file that is one image
    "threshold",  # the job's: flagged means probability >= threshold
    "out_of_distribution",  # 1: unlike the training images (unflagged: not assessed); empty: not measured
    "ood_distance",  # how unlike (training.ood), against the card's ood threshold
)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC, or None."""
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def confusion(tp: int | None, fp: int | None, tn: int | None, fn: int | None) -> dict[str, int] | None:
    """{tp, fp, tn, fn}, or None when nothing labelled was counted."""
    cells = {"tp": tp or 0, "fp": fp or 0, "tn": tn or 0, "fn": fn or 0}
    return cells if any(cells.values()) else None


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _rate(job: Job, progress: JobProgress, now: datetime) -> float | None:
    if job.status in FINISHED_JOB_STATUSES and job.images_per_second is not None:
        return job.images_per_second
    if job.started_at is None:
        return None
    elapsed = ((job.finished_at or now) - job.started_at).total_seconds()
    done = progress.scored + progress.failed
    return done / elapsed if elapsed > 0 and done else None


def _progress_fraction(job: Job, progress: JobProgress) -> float | None:
    if job.status == "succeeded":
        return 1.0
    if progress.total == 0:
        return None if job.status in ("queued", "planning") else 0.0
    return min((progress.scored + progress.failed) / progress.total, 1.0)


def job_report(job: Job, progress: JobProgress, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything known about a job: counts, confusion, progress, speed, ETA, timings, links."""
    now = now or datetime.now(UTC)
    finished = job.status in FINISHED_JOB_STATUSES and job.tp is not None
    matrix = (
        confusion(job.tp, job.fp, job.tn, job.fn)
        if finished
        else confusion(progress.tp, progress.fp, progress.tn, progress.fn)
    )
    rate = _rate(job, progress, now)
    running = job.status in ("planning", "running")
    eta = progress.remaining / rate if running and rate and progress.total else None
    if finished:
        recall, specificity = job.recall, job.specificity
    else:
        recall = _ratio(matrix["tp"], matrix["tp"] + matrix["fn"]) if matrix else None
        specificity = _ratio(matrix["tn"], matrix["tn"] + matrix["fp"]) if matrix else None
    return {
        "id": job.id,
        "status": job.status,
        "url": url_for("jobs.get_job_route", job_id=job.id, _external=True),
        "source": job.source,
        "source_kind": job.source_kind,
        "submitted_by": job.submitted_by,
        "team": job.team,
        "model_version": job.model_version,
        "threshold": job.threshold,
        "priority": job.priority,
        "return_to": destination_names(job.return_to),
        "batch_size": job.batch_size,
        "total": progress.total,
        "scored": progress.scored,
        "failed": progress.failed,
        "flagged": progress.flagged,
        "skipped": job.skipped,
        "skipped_reasons": job.skipped_reasons or {},
        "remaining": progress.remaining,
        "batches": {
            "total": progress.batches_total,
            "done": progress.batches_done,
            "failed": progress.batches_failed,
        },
        "confusion": matrix,
        "recall": recall,
        "specificity": specificity,
        "progress": _progress_fraction(job, progress),
        "images_per_second": rate,
        "eta_seconds": eta,
        "created_at": iso(job.created_at),
        "planned_at": iso(job.planned_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "rerun_at": iso(job.rerun_at),
        # this run's: a re-run counts from when it was asked for, not from the job's creation
        "seconds": ((job.finished_at or now) - (job.rerun_at or job.created_at)).total_seconds(),
        "error": job.error,
    }


def load_job_report(session: Session, job_id: int, viewer: Viewer | None) -> dict[str, Any] | None:
    """The report of one job read in `session`, with its studies counted; None when there is none
    that `viewer` may see."""
    job = get_job(session=session, job_id=job_id, viewer=viewer)
    if job is None:
        return None
    report = job_report(job, job_progress(session=session, job_id=job_id))
    report["studies"] = studies_summary(study_verdicts(session=session, job_id=job_id))
    report["unreadable_labelled"] = unreadable_labelled(session=session, job_id=job_id)
    report["failed_permanently"] = permanent_errors(session=session, job_id=job_id)
    report["site_thresholds"] = site_thresholds(session=session, job_id=job_id)
    report["notifications"] = [
        {
            "event": n.event,
            "attempts": n.attempts,
            "delivered_at": iso(n.delivered_at),
            "gave_up_at": iso(n.gave_up_at),
            "last_error": n.last_error,
        }
        for n in job_notifications(session=session, job_id=job_id)
    ]
    report["deliveries"] = [delivery_report(d) for d in job_deliveries(session=session, job_id=job_id)]
    model = model_version_named(session=session, version=job.model_version)
    counts, flagged, beyond = job_score_histogram(session=session, job_id=job_id)
    report["drift"] = drift((model.card or {}).get("reference") if model else None, counts, flagged, beyond)
    return report


ONE_JOB_ONLY = (
    "studies",
    "drift",
    "unreadable_labelled",
    "failed_permanently",
    "site_thresholds",
    "notifications",
    "deliveries",
)  # each costs a query


def delivery_report(delivery: ResultDelivery) -> dict[str, Any]:
    """One study's results for one destination: its state (delivered, given up, retrying after a
    failed try, or pending), what was sent, and when it is tried next while it is still due."""
    if delivery.delivered_at is not None:
        state = "delivered"
    elif delivery.gave_up_at is not None:
        state = "given up"
    else:
        state = "retrying" if delivery.attempts else "pending"
    return {
        "study_uid": delivery.study_uid,
        "destination": delivery.destination,
        "state": state,
        "verdict": delivery.verdict,
        "objects": delivery.objects,
        "attempts": delivery.attempts,
        "next_at": iso(delivery.next_at) if state in ("pending", "retrying") else None,
        "delivered_at": iso(delivery.delivered_at),
        "gave_up_at": iso(delivery.gave_up_at),
        "last_error": delivery.last_error,
    }


def job_reports(session: Session, jobs: list[Job]) -> list[dict[str, Any]]:
    """Reports of a page of jobs, their progress read in one query (ONE_JOB_ONLY are counted only
    in one job's report, and null here)."""
    progress = jobs_progress(session=session, job_ids=[job.id for job in jobs])
    return [{**job_report(job, progress[job.id]), **dict.fromkeys(ONE_JOB_ONLY)} for job in jobs]


def study_report(study: StudyVerdict) -> dict[str, Any]:
    """One study: verdict, score, counts, and its series with theirs."""
    return {
        "study_uid": study.study_key,
        "verdict": study.verdict,
        "score": study.score,
        "images": study.total("images"),
        "flagged_images": study.total("flagged_images"),
        "pending": study.total("pending"),
        "series": [
            {
                "series_uid": s.series_key,
                "description": s.description,
                "plane": s.plane,
                "verdict": s.verdict,
                "reason": s.reason,
                "images": s.images,
                "flagged_images": s.flagged_images,
                "score": s.score,
            }
            for s in study.series
        ],
    }


def studies_summary(studies: list[StudyVerdict]) -> dict[str, int]:
    """The job JSON's `studies`: how many, how many flagged, how many not assessed."""
    verdicts = [s.verdict for s in studies]
    return {
        "total": len(verdicts),
        "flagged": verdicts.count(FLAGGED),
        "not_assessed": verdicts.count(NOT_ASSESSED),
    }


def batch_report(batch: Batch) -> dict[str, Any]:
    """One batch: status, counts, its confusion matrix, timings and attempts."""
    return {
        "id": batch.id,
        "index": batch.index,
        "status": batch.status,
        "size": batch.size,
        "scored": batch.scored,
        "failed": batch.failed,
        "flagged": batch.flagged,
        "confusion": confusion(batch.tp, batch.fp, batch.tn, batch.fn),
        "attempts": batch.attempts,
        "requeued_because": batch.requeued_because,
        "seconds": batch.seconds,
        "started_at": iso(batch.started_at),
        "finished_at": iso(batch.finished_at),
        "error": batch.error,
    }


def result_report(result: ImageResult) -> dict[str, Any]:
    """One image's outcome (path relative to the job's source; frame 1.. of a multi-frame file)."""
    return {
        "id": result.id,
        "path": result.relpath,
        "frame": result.frame,
        "label": result.label,
        "probability": result.probability,
        "flagged": result.flagged,
        "status": result.status,
        "error": result.error,
        "batch_id": result.batch_id,
        "out_of_distribution": result.out_of_distribution,
        "ood_distance": result.ood_distance,
        "assessment": assessment(result),
    }


def assessment(result: ImageResult) -> str | None:
    """`flagged`, `not flagged`, or `not assessed`: an unflagged image unlike the training images
    (its negative means little); None until scored."""
    if result.flagged is None:
        return None
    if result.flagged:
        return "flagged"
    return "not assessed" if result.out_of_distribution else "not flagged"


def result_row(result: ImageResult, threshold: float) -> tuple[Any, ...]:
    """One image's outcome as a CSV row, in RESULT_CSV_COLUMNS order."""
    flagged = "" if result.flagged is None else int(result.flagged)
    label = "" if result.label is None else result.label
    probability = "" if result.probability is None else f"{result.probability:.6f}"
    return (
        result.id,
        result.relpath,
        label,
        probability,
        flagged,
        result.status,
        result.error or "",
        result.batch_id,
        result.frame,
        f"{threshold:.6f}",
        "" if result.out_of_distribution is None else int(result.out_of_distribution),
        "" if result.ood_distance is None else f"{result.ood_distance:.3f}",
    )
