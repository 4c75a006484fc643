"""REST: a job's studies, each with its verdict and series (db/studies.py says how verdicts add up)."""

from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, jsonify, request

from api.context import sessions
from api.errors import ApiError
from api.job_report import study_report
from api.rest_jobs import MAX_PAGE, int_arg, visible_job
from api.rest_results import spreadsheet_safe
from db.studies import StudyVerdict, study_verdicts

STUDY_CSV_COLUMNS = (
    "study_uid",
    "verdict",
    "score",
    "images",
    "flagged_images",
    "pending",
    "series",
    "series_not_assessed",
)

bp = Blueprint("studies", __name__, url_prefix="/api/v1")


@bp.get("/jobs/<int:job_id>/studies")
def list_studies_route(job_id: int) -> Response:
    """A page of the job's studies, flagged first (?limit=, ?offset=), or ?format=csv for all."""
    fmt = request.args.get("format", "")
    if fmt not in ("", "csv"):
        raise ApiError(400, "bad_request", f"format must be csv, not {fmt!r}")
    limit = int_arg("limit", 50, high=MAX_PAGE) or 50
    offset = int_arg("offset", 0, low=0) or 0
    with sessions(read_only=True)() as session:
        visible_job(session, job_id)
        studies = study_verdicts(session=session, job_id=job_id)
    if fmt == "csv":
        name = f"brainscan-job-{job_id}-studies.csv"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(_csv(studies), mimetype="text/csv", headers=headers)
    page = [study_report(s) for s in studies[offset : offset + limit]]
    next_offset = offset + limit if offset + limit < len(studies) else None
    return jsonify({"job_id": job_id, "total": len(studies), "items": page, "next_offset": next_offset})


def _csv(studies: list[StudyVerdict]) -> str:
    """One row per study, in the listing's order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(STUDY_CSV_COLUMNS)
    for study in studies:
        score = "" if study.score is None else f"{study.score:.6f}"
        skipped = sum(s.not_assessed is not None for s in study.series)
        counts = [study.total(name) for name in ("images", "flagged_images", "pending")]
        row = [study.study_key, study.verdict, score, *counts, len(study.series), skipped]
        writer.writerow([spreadsheet_safe(cell) for cell in row])
    return buffer.getvalue()
