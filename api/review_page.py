"""The web view's review page: a job's queue with thumbnails, a verdict button per image, and
what the verdicts say so far (the same queue, verdicts and figures as the REST API)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from api.auth import current_actor, current_principal, current_viewer
from api.context import sessions
from api.errors import ApiError
from api.job_report import load_job_report, result_report
from api.rest_reviews import record_verdict
from db.reviews import review_queue, reviewed_figures

bp = Blueprint("review", __name__)
QUEUE_SHOWN = 24  # images on the page at once; each verdict brings the next one in


@bp.get("/jobs/<int:job_id>/review")
def review_page(job_id: int) -> str:
    """The next images to review and the reviewed figures."""
    with sessions(read_only=True)() as session:
        report = load_job_report(session, job_id, current_viewer())
        if report is None:
            raise ApiError(404, "not_found", f"there is no job {job_id}")
        queue = [result_report(r) for r in review_queue(session=session, job_id=job_id, limit=QUEUE_SHOWN)]
        figures = reviewed_figures(session=session, job_id=job_id)
    principal = current_principal()
    may_review = principal is not None and "review" in principal.scopes
    return render_template("review.html", job=report, queue=queue, figures=figures, may_review=may_review)


@bp.post("/jobs/<int:job_id>/review/<int:result_id>")
def review_image(job_id: int, result_id: int) -> Response:
    """A verdict button (needs the review scope; audited); back to the queue."""
    record_verdict(job_id, result_id, request.form.get("verdict"), actor=current_actor())
    return redirect(url_for("review.review_page", job_id=job_id) + "#queue")
