"""REST: a job's studies, each with its verdict and series (db/studies.py says how verdicts add up)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.auth import current_viewer
from api.context import sessions
from api.job_report import study_report
from api.rest_jobs import MAX_PAGE, int_arg, not_found
from db.jobs import get_job
from db.studies import study_verdicts

bp = Blueprint("studies", __name__, url_prefix="/api/v1")


@bp.get("/jobs/<int:job_id>/studies")
def list_studies_route(job_id: int) -> Response:
    """A page of the job's studies, flagged first (?limit=, ?offset=)."""
    limit = int_arg("limit", 50, high=MAX_PAGE) or 50
    offset = int_arg("offset", 0, low=0) or 0
    with sessions(read_only=True)() as session:
        if get_job(session=session, job_id=job_id, viewer=current_viewer()) is None:
            raise not_found(job_id)
        studies = study_verdicts(session=session, job_id=job_id)
    page = [study_report(s) for s in studies[offset : offset + limit]]
    next_offset = offset + limit if offset + limit < len(studies) else None
    return jsonify({"job_id": job_id, "total": len(studies), "items": page, "next_offset": next_offset})
