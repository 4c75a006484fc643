"""REST: radiologists' review of a job (db/reviews.py): the queue, a verdict, what the verdicts say."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.auth import current_actor
from api.context import sessions
from api.errors import ApiError
from api.job_report import iso, result_report
from api.rest_jobs import MAX_PAGE, int_arg, visible_job
from db.audit import record_event
from db.models import REVIEW_VERDICTS, Review
from db.reviews import record_review, review_queue, reviewed_figures

bp = Blueprint("reviews", __name__, url_prefix="/api/v1")


@bp.get("/jobs/<int:job_id>/review-queue")
def review_queue_route(job_id: int) -> Response:
    """The next images to review: flagged ones by descending score, then the unflagged sample."""
    limit = int_arg("limit", 50, high=MAX_PAGE) or 50
    with sessions(read_only=True)() as session:
        visible_job(session, job_id)
        items = [result_report(r) for r in review_queue(session=session, job_id=job_id, limit=limit)]
    return jsonify({"job_id": job_id, "items": items})


@bp.post("/jobs/<int:job_id>/results/<int:result_id>/review")
def record_review_route(job_id: int, result_id: int) -> Response:
    """Record a verdict (`tumour`, `no tumour` or `unsure`) on one scored image; needs `review`."""
    body = request.get_json(silent=True) or {}
    verdict = body.get("verdict") if isinstance(body, dict) else None
    return jsonify(record_verdict(job_id, result_id, verdict, actor=current_actor()))


def record_verdict(job_id: int, result_id: int, verdict: object, *, actor: str) -> dict[str, object]:
    """Store and audit a verdict (the REST route's and the review page's one path)."""
    if not isinstance(verdict, str) or verdict not in REVIEW_VERDICTS:
        raise ApiError(400, "bad_request", f"verdict must be one of {', '.join(REVIEW_VERDICTS)}")
    with sessions().begin() as session:
        visible_job(session, job_id)
        if not record_review(
            session=session, job_id=job_id, result_id=result_id, verdict=verdict, reviewer=actor
        ):
            raise ApiError(404, "not_found", f"job {job_id} has no scored image {result_id}")
        record_event(
            session=session,
            actor=actor,
            action="review.verdict",
            job_id=job_id,
            detail={"result_id": result_id, "verdict": verdict},
        )
        review = session.get(Review, result_id)
        assert review is not None
        return {
            "result_id": result_id,
            "verdict": review.verdict,
            "reviewer": review.reviewer,
            "at": iso(review.at),
        }


@bp.get("/jobs/<int:job_id>/reviewed")
def reviewed_route(job_id: int) -> Response:
    """The reviewed matrix and the recall and specificity it supports, with 95 % intervals."""
    with sessions(read_only=True)() as session:
        visible_job(session, job_id)
        figures = reviewed_figures(session=session, job_id=job_id)
    return jsonify({"job_id": job_id, **figures})
