"""The operator web view: jobs (live progress), one job (matrix, batches, flagged images), submit, model."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from PIL import Image
from werkzeug.wrappers import Response

from api.auth import current_actor, current_principal, current_viewer
from api.context import sessions, settings
from api.errors import ApiError
from api.job_report import batch_report, job_reports, load_job_report, result_report, study_report
from api.model_figures import card_figures, sweep_rows
from api.rest_jobs import MAX_PAGE, cancel, int_arg, rerun
from api.rest_jobs import send_results as send_results_again
from api.rest_models import model_report, plot_file
from api.submission import MAX_BATCH_SIZE, submission_from_request, submit
from brainscan import __version__
from db.audit import ACTIONS, list_events
from db.batches import list_batches
from db.deliveries import dicom_studies
from db.jobs import list_jobs
from db.model_versions import current_model_version
from db.models import JOB_STATUSES
from db.results import list_results
from db.studies import study_verdicts, top_images

bp = Blueprint("views", __name__)
JOBS_PER_PAGE = 50
AUDIT_PER_PAGE = 100
ACTION_FAMILIES = sorted({action.split(".")[0] for action in ACTIONS if "." in action})
IMAGES_SHOWN = 48  # thumbnails per section on the job page
ERRORS_SHOWN = 20
BATCHES_SHOWN = 500
STUDIES_SHOWN = 20  # on the job page, flagged first; the API and CSV have them all
TOP_SLICES = 3  # a study's highest-scoring slices shown beside it
FOLDERS_SUGGESTED = 200
WIDE_PLOT = 1.8  # width / height above which a plot spans the grid
PLOT_TITLES = {
    "roc": "ROC curve ({split} split)",
    "confusion_matrix": "Confusion matrix ({split} split)",
    "learning_curves": "Learning curves",
    "threshold_sweep": "Threshold sweep ({split} split)",
    "reliability": "Reliability on the {split} split: predicted probability against observed tumour fraction",
}


@bp.app_context_processor
def page_context() -> dict[str, Any]:
    """What every page's frame shows: who is signed in, the version."""
    try:
        principal = current_principal()
    except Exception:  # an error page drawn because the database is down must still draw
        principal = None
    return {"principal": principal, "version": __version__}


@bp.app_template_filter("pct")
def pct(fraction: float | None) -> str:
    """0.873 -> '87 %'; None -> '–'."""
    return "–" if fraction is None else f"{fraction * 100:.0f} %"


@bp.app_template_filter("pct1")
def pct1(fraction: float | None) -> str:
    """0.9354 -> '93.5 %' (recall and specificity: a point matters); None -> '–'."""
    return "–" if fraction is None else f"{fraction * 100:.1f} %"


@bp.app_template_filter("ratio")
def ratio(value: float | None, digits: int = 3) -> str:
    """A 0..1 figure with a fixed number of digits, '–' when unknown."""
    return "–" if value is None else f"{value:.{digits}f}"


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """Seconds as '42 s', '3 min 5 s' or '2 h 10 min'."""
    if seconds is None:
        return "–"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


@bp.app_template_filter("when")
def when(iso_time: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if not iso_time:
        return "–"
    return datetime.fromisoformat(iso_time).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("rate")
def rate(images_per_second: float | None) -> str:
    """Images per second, to a sensible precision."""
    if images_per_second is None:
        return "–"
    return f"{images_per_second:.1f}/s" if images_per_second < 100 else f"{images_per_second:,.0f}/s"


@bp.get("/")
def index() -> Response:
    """The jobs page is home."""
    return redirect(url_for("views.jobs"))


@bp.get("/jobs")
def jobs() -> str:
    """Every job, newest first, with live progress; an empty state says how to submit one."""
    status = request.args.get("status") or None
    if status not in (None, *JOB_STATUSES):
        raise ApiError(400, "bad_request", f"there is no job status {status!r}")
    before_id = int_arg("before_id", None)
    with sessions(read_only=True)() as session:
        rows = list_jobs(
            session=session, status=status, limit=JOBS_PER_PAGE, before_id=before_id, viewer=current_viewer()
        )
        reports = job_reports(session, rows)
    older = reports[-1]["id"] if len(reports) == JOBS_PER_PAGE else None
    return render_template(
        "jobs.html",
        jobs=reports,
        status=status,
        statuses=JOB_STATUSES,
        before_id=before_id,
        older=older,
        archive_root=settings().resolved_archive_root,
        poll_limit=min(JOBS_PER_PAGE, MAX_PAGE),
    )


@bp.get("/jobs/<int:job_id>")
def job(job_id: int) -> str:
    """One job: source, model, timings, confusion matrix, batches, missed and flagged images."""
    with sessions(read_only=True)() as session:
        report = load_job_report(session, job_id, current_viewer())
        if report is None:
            raise ApiError(404, "not_found", f"there is no job {job_id}")
        batches = [batch_report(b) for b in list_batches(session=session, job_id=job_id)[:BATCHES_SHOWN]]
        studies = study_verdicts(session=session, job_id=job_id)
        shown = [study_report(s) for s in studies[:STUDIES_SHOWN]]
        tops = top_images(
            session=session, job_id=job_id, study_keys=[s["study_uid"] for s in shown], k=TOP_SLICES
        )
        for study in shown:
            study["top"] = [result_report(r) for r in tops.get(study["study_uid"], [])]
        pages = {name: _page_number(f"{name}_page") for name in ("missed", "flagged")}
        configured = list(settings().destinations)
        sendable = (
            report["status"] == "succeeded" and configured and dicom_studies(session=session, job_id=job_id)
        )
        images = {
            name: [
                result_report(r)
                for r in list_results(
                    session=session, job_id=job_id, limit=limit, offset=pages.get(name, 0) * limit, **filters
                )
            ]
            for name, limit, filters in (
                ("missed", IMAGES_SHOWN, {"false_negatives": True, "order": "score_asc"}),  # worst first
                ("flagged", IMAGES_SHOWN, {"flagged": True, "order": "score_desc"}),
                ("errors", ERRORS_SHOWN, {"errors": True}),
            )
        }
    return render_template(
        "job.html",
        job=report,
        batches=batches,
        images=images,
        pages=pages,
        page_size=IMAGES_SHOWN,
        studies=shown,
        batches_shown=BATCHES_SHOWN,
        destinations=configured if sendable else [],
    )


def _page_number(name: str) -> int:
    """A gallery's page from the query string (0-based; anything else is the first page)."""
    value = request.args.get(name, "")
    return int(value) if value.isdigit() and len(value) < 7 else 0


@bp.post("/jobs/<int:job_id>/cancel")
def cancel_job(job_id: int) -> Response:
    """The cancel button (audited); a job that has finished meanwhile is said so."""

    def act() -> str:
        cancel(job_id, actor=current_actor())
        return f"Job {job_id} was cancelled."

    return _job_button(job_id, act)


@bp.post("/jobs/<int:job_id>/rerun")
def rerun_job(job_id: int) -> Response:
    """The re-run button: score the failed images again (audited)."""

    def act() -> str:
        sent = rerun(job_id, actor=current_actor())
        return f"Job {job_id}: {sent} batch{'es' if sent != 1 else ''} queued again."

    return _job_button(job_id, act)


@bp.post("/jobs/<int:job_id>/deliveries")
def send_results(job_id: int) -> Response:
    """The send-again button: the job's study results to its destinations once more (audited)."""

    def act() -> str:
        due = send_results_again(job_id, None, actor=current_actor())
        studies = f"{due} stud{'ies' if due != 1 else 'y'}"
        return f"Job {job_id}: the results of {studies} go to the PACS within a minute."

    return _job_button(job_id, act)


def _job_button(job_id: int, act: Callable[[], str]) -> Response:
    """Run a job page button's action; its message (or the refusal) is flashed on the job page."""
    try:
        flash(act(), "success")
    except ApiError as exc:
        if exc.status == 404:
            raise
        flash(exc.message, "error")
    return redirect(url_for("views.job", job_id=job_id))


def _model_summary(*, with_plot_shapes: bool = False) -> dict[str, Any] | None:
    with sessions(read_only=True)() as session:
        model = current_model_version(session=session)
        if model is None:
            return None
        summary = model_report(model, with_card=True)
        if with_plot_shapes:
            summary["wide_plots"] = {name for name in summary["plots"] if _is_wide(plot_file(model, name))}
        return summary


def _is_wide(path: Path | None) -> bool:
    # a plot much wider than tall (learning curves side by side) gets a whole row of the grid
    if path is None:
        return False
    with Image.open(path) as image:  # reads the header only
        return image.width > WIDE_PLOT * image.height


def _archive_folders() -> list[str]:
    """The archive root's top-level folders, for the submit form's suggestions."""
    try:
        with os.scandir(settings().resolved_archive_root) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False) and e.name[:1] != "."]
    except OSError:
        return []
    return sorted(names)[:FOLDERS_SUGGESTED]


@bp.route("/submit", methods=["GET", "POST"])
def submit_page() -> str | Response | tuple[str, int]:
    """Submit a folder under the archive root or upload an archive; refusals shown on the form."""
    context = {
        "archive_root": settings().resolved_archive_root,
        "max_batch_size": MAX_BATCH_SIZE,
        "default_batch_size": settings().batch_size,
        "model": _model_summary(),
        "max_upload_bytes": settings().max_upload_bytes,
        "form": request.form,
        "folders": _archive_folders(),
    }
    if request.method == "GET":
        return render_template("submit.html", **context)
    try:
        job_id, _ = submit(submission_from_request(), principal=current_principal())
    except ApiError as exc:
        return render_template("submit.html", error=exc.message, **context), exc.status
    flash(f"Job {job_id} was submitted; it starts as soon as a worker is free.", "success")
    return redirect(url_for("views.job", job_id=job_id))


@bp.get("/audit")
def audit() -> str:
    """The audit log for admins, newest first, filtered by actor, action (or family) and job."""
    actor = request.args.get("actor", "").strip() or None
    action = request.args.get("action") or None
    if action is not None and action not in ACTIONS and action.rstrip(".") not in ACTION_FAMILIES:
        raise ApiError(400, "bad_request", f"there is no audit action {action!r}")
    job_id, before_id = int_arg("job", None), int_arg("before_id", None)
    with sessions(read_only=True)() as session:
        events = list_events(
            session=session,
            job_id=job_id,
            actor=actor,
            action=action,
            limit=AUDIT_PER_PAGE,
            before_id=before_id,
        )
    older = events[-1].id if len(events) == AUDIT_PER_PAGE else None
    choices = [f"{family}." for family in ACTION_FAMILIES] + list(ACTIONS)
    return render_template(
        "audit.html",
        events=events,
        actions=choices,
        actor=actor,
        action=action,
        job_id=job_id,
        before_id=before_id,
        older=older,
    )


@bp.get("/model")
def model() -> str:
    """The current model's card: metrics (test, validation, CV, cross-source), sweep and plots."""
    summary = _model_summary(with_plot_shapes=True)
    card = summary["card"] if summary else {}
    split = card.get("evaluation_set") or "test"  # the held-out split the card's plots and sweep use
    titles = {name: title.format(split=split) for name, title in PLOT_TITLES.items()}
    return render_template(
        "model.html",
        model=summary,
        card=card,
        plot_titles=titles,
        sweep_split=split,
        figures=card_figures(card.get("metrics") or {}),
        sweep=sweep_rows(card.get("threshold_sweep") or [], card.get("threshold")),
    )
