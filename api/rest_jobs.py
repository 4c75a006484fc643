"""REST: submit, list, read, cancel and re-run jobs, and read a job's batches (/api/v1/jobs)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.orm import Session

from api import MAX_ID
from api.auth import current_actor, current_principal, current_viewer
from api.context import celery, sessions, settings
from api.errors import ApiError
from api.job_report import batch_report, job_reports, load_job_report
from api.submission import submission_from_request, submit
from db.audit import record_event
from db.batches import list_batches
from db.deliveries import destination_names, dicom_studies, resend
from db.jobs import FINISHED_JOB_STATUSES, cancel_job, get_job, list_jobs, rerun_failed
from db.models import JOB_STATUSES, Job, utcnow
from db.results import permanent_errors
from worker.enqueue import enqueue_batches

bp = Blueprint("jobs", __name__, url_prefix="/api/v1")
MAX_PAGE = 500


def int_arg(name: str, default: int | None, *, low: int = 1, high: int | None = None) -> int | None:
    """An optional whole-number query argument within [low, high]; 400 otherwise."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    high = MAX_ID if high is None else high
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name} must be from {low} to {high}, not {value}")
    return value


def not_found(job_id: int) -> ApiError:
    """The 404 for a job id nobody knows."""
    return ApiError(404, "not_found", f"there is no job {job_id}")


def visible_job(session: Session, job_id: int) -> Job:
    """The job, if the caller may see it; the 404 otherwise (no such job, or another's)."""
    job = get_job(session=session, job_id=job_id, viewer=current_viewer())
    if job is None:
        raise not_found(job_id)
    return job


def job_or_404(job_id: int) -> dict[str, Any]:
    """The report of a job, read now; 404 when there is no such job or the caller may not see it."""
    with sessions(read_only=True)() as session:
        report = load_job_report(session, job_id, current_viewer())
    if report is None:
        raise not_found(job_id)
    return report


@bp.post("/jobs")
def submit_job_route() -> tuple[Response, int, dict[str, str]]:
    """Submit a folder (JSON) or an archive (multipart); 202 for a new job, 200 for a repeated key."""
    job_id, created = submit(submission_from_request(), principal=current_principal())
    report = job_or_404(job_id)
    return jsonify(report), 202 if created else 200, {"Location": report["url"]}


@bp.get("/jobs")
def list_jobs_route() -> Response:
    """Jobs newest first; ?status=, ?limit=, and ?before_id= (the last id seen) for the next page."""
    status = request.args.get("status") or None
    if status is not None and status not in JOB_STATUSES:
        raise ApiError(400, "bad_request", f"status must be one of {', '.join(JOB_STATUSES)}, not {status!r}")
    limit = int_arg("limit", 50, high=MAX_PAGE) or 50
    before_id = int_arg("before_id", None)
    with sessions(read_only=True)() as session:
        jobs = list_jobs(
            session=session, status=status, limit=limit, before_id=before_id, viewer=current_viewer()
        )
        reports = job_reports(session, jobs)
    next_before = reports[-1]["id"] if len(reports) == limit else None
    return jsonify({"jobs": reports, "next_before_id": next_before})


@bp.get("/jobs/<int:job_id>")
def get_job_route(job_id: int) -> Response:
    """One job: counts, confusion matrix, progress, images/s, ETA, timings."""
    return jsonify(job_or_404(job_id))


@bp.get("/jobs/<int:job_id>/batches")
def list_batches_route(job_id: int) -> Response:
    """The job's batches in planning order, each with its confusion matrix."""
    with sessions(read_only=True)() as session:
        visible_job(session, job_id)
        batches = [batch_report(batch) for batch in list_batches(session=session, job_id=job_id)]
    return jsonify({"job_id": job_id, "batches": batches})


def cancel(job_id: int, *, actor: str) -> None:
    """Cancel an unfinished job and audit it; 404 for no such job (or another's), 409 when it has finished."""
    with sessions().begin() as session:
        job = get_job(session=session, job_id=job_id, viewer=current_viewer())
        if job is None:
            raise not_found(job_id)
        if not cancel_job(session=session, job_id=job_id):
            raise ApiError(409, "conflict", f"job {job_id} has already finished ({job.status})")
        record_event(session=session, actor=actor, action="job.cancel", job_id=job_id)


def rerun(job_id: int, *, actor: str) -> int:
    """Queue a finished job's failed images again and audit it; returns the batches sent."""
    with sessions().begin() as session:
        job = get_job(session=session, job_id=job_id, viewer=current_viewer())
        if job is None:
            raise not_found(job_id)
        batch_ids = rerun_failed(session=session, job_id=job_id)
        if not batch_ids:
            permanent = permanent_errors(session=session, job_id=job_id)
            if job.status not in FINISHED_JOB_STATUSES:
                why = "it has not finished yet"
            elif permanent:
                why = (
                    f"its {permanent:,} failed image{'s are' if permanent != 1 else ' is'} no usable "
                    "slice (corrupt, not an image, too small): reading again would fail the same way"
                )
            else:
                why = "no image or batch of it failed"
            raise ApiError(409, "conflict", f"job {job_id} has nothing to re-run: {why}")
        record_event(
            session=session,
            actor=actor,
            action="job.rerun",
            job_id=job_id,
            detail={"batches": len(batch_ids)},
        )
    return enqueue_batches(celery(), batch_ids, stat=batch_ids if job.priority == "stat" else ())


@bp.post("/jobs/<int:job_id>/cancel")
def cancel_job_route(job_id: int) -> Response:
    """Cancel an unfinished job (its queued batches are dropped); 409 when it has finished."""
    cancel(job_id, actor=current_actor())
    return jsonify(job_or_404(job_id))


@bp.post("/jobs/<int:job_id>/rerun")
def rerun_job_route(job_id: int) -> tuple[Response, int]:
    """Score a finished job's failed images again; 409 when it is running or nothing failed."""
    rerun(job_id, actor=current_actor())
    return jsonify(job_or_404(job_id)), 202


def send_results(job_id: int, destinations: list[str] | None, *, actor: str) -> int:
    """(Re-)send a succeeded job's study results to `destinations` (default: those its
    return_to names, else every configured one) and audit it; returns how many are now due."""
    configured = settings().destinations
    with sessions().begin() as session:
        job = get_job(session=session, job_id=job_id, viewer=current_viewer())
        if job is None:
            raise not_found(job_id)
        names = destinations or destination_names(job.return_to) or list(configured)
        if not names:
            raise ApiError(
                409, "no_destination", "no destination is configured (BRAINSCAN_DICOM_DESTINATIONS)"
            )
        unknown = [n for n in names if n not in configured]
        if unknown:
            raise ApiError(
                400,
                "unknown_destination",
                f"no destination {', '.join(map(repr, unknown))}; "
                f"configured: {', '.join(configured) or 'none'}",
            )
        if job.status != "succeeded":
            raise ApiError(409, "conflict", f"job {job_id} has no results to send: it is {job.status}")
        if not dicom_studies(session=session, job_id=job_id):
            raise ApiError(
                409, "conflict", f"job {job_id} holds no DICOM study: there is no PACS study to return to"
            )
        due = resend(session=session, job_id=job_id, destinations=names, now=utcnow())
        record_event(
            session=session, actor=actor, action="results.send", job_id=job_id, detail={"destinations": names}
        )
    return due


@bp.post("/jobs/<int:job_id>/deliveries")
def send_results_route(job_id: int) -> tuple[Response, int]:
    """Send a succeeded job's study results (DICOM SR and KOS) to the PACS again, or to other
    destinations: body {"destinations": [names]} (optional); the watchdog sends them."""
    body = request.get_json(silent=True) or {}
    names = body.get("destinations") if isinstance(body, dict) else None
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise ApiError(400, "bad_destinations", "destinations must be a list of destination names")
    send_results(job_id, names, actor=current_actor())
    return jsonify(job_or_404(job_id)), 202
