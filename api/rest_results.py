"""REST: a job's per-image results, paged or downloaded whole (CSV/JSON, streamed), and thumbnails."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.orm import Session, sessionmaker

from api.auth import current_viewer
from api.context import sessions, settings
from api.errors import ApiError
from api.job_report import RESULT_CSV_COLUMNS, result_report, result_row
from api.rest_jobs import MAX_PAGE, int_arg, visible_job
from api.thumbnails import ThumbnailError, previews
from brainscan.settings import parse_bool
from db.jobs import get_job
from db.models import ImageResult, Job
from db.results import iter_results, list_results
from db.series import series_thresholds
from training.dataset import file_at, resolves_inside
from training.thumbnail import FULL_SIDE, THUMBNAIL_SIDE

bp = Blueprint("results", __name__, url_prefix="/api/v1")
FILTERS = ("flagged", "false_negatives", "errors")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula


def spreadsheet_safe(cell: object) -> object:
    """A text cell that a spreadsheet would read as a formula, quoted with a leading apostrophe
    (OWASP's advice for CSV injection); numbers and other text unchanged."""
    return f"'{cell}" if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell


def _flag(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_bool(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be true or false, not {raw!r}") from None


@dataclass(frozen=True, slots=True)
class Filters:
    """Which results to show: flagged or not (None: both), only false negatives, only errors."""

    flagged: bool | None
    false_negatives: bool
    errors: bool

    def suffix(self) -> str:
        chosen = [name for name in FILTERS if getattr(self, name)]
        return "".join("-" + name.replace("_", "-") for name in chosen)


def _filters() -> Filters:
    return Filters(_flag("flagged"), bool(_flag("false_negatives")), bool(_flag("errors")))


def _csv_lines(maker: sessionmaker[Session], job_id: int, filters: Filters) -> Iterator[str]:
    # runs after the view has returned: it gets its sessionmaker, not the app context
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(row: tuple[object, ...]) -> str:
        writer.writerow([spreadsheet_safe(cell) for cell in row])
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line(RESULT_CSV_COLUMNS)
    with maker() as session:
        job = session.get(Job, job_id)
        threshold = job.threshold if job is not None else float("nan")
        by_series = series_thresholds(session=session, job_id=job_id)  # a site's, where a series took one
        for result in iter_results(session=session, job_id=job_id, **asdict(filters)):
            yield line(result_row(result, by_series.get(result.series_id or 0, threshold)))


def _json_items(maker: sessionmaker[Session], job_id: int, filters: Filters) -> Iterator[str]:
    yield f'{{"job_id": {job_id}, "results": ['
    separator = "\n"
    with maker() as session:
        for result in iter_results(session=session, job_id=job_id, **asdict(filters)):
            yield separator + json.dumps(result_report(result))
            separator = ",\n"
    yield "\n]}\n"


def _download(job_id: int, fmt: str, filters: Filters) -> Response:
    name = f"brainscan-job-{job_id}{filters.suffix()}.{fmt}"
    maker = sessions(read_only=True)
    body, mimetype = (
        (_csv_lines(maker, job_id, filters), "text/csv")
        if fmt == "csv"
        else (_json_items(maker, job_id, filters), "application/json")
    )
    return Response(
        body, mimetype=mimetype, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@bp.get("/jobs/<int:job_id>/results")
def list_results_route(job_id: int) -> Response:
    """A page of results (?limit=, ?after_id=), or ?format=csv|json for all of them, streamed."""
    filters = _filters()
    fmt = request.args.get("format", "")
    if fmt not in ("", "csv", "json"):
        raise ApiError(400, "bad_request", f"format must be csv or json, not {fmt!r}")
    limit = int_arg("limit", 100, high=MAX_PAGE) or 100
    after_id = int_arg("after_id", None)
    with sessions(read_only=True)() as session:
        visible_job(session, job_id)
        if fmt:
            return _download(job_id, fmt, filters)
        rows = list_results(session=session, job_id=job_id, limit=limit, after_id=after_id, **asdict(filters))
        results = [result_report(row) for row in rows]
    next_after = results[-1]["id"] if len(results) == limit else None
    return jsonify({"job_id": job_id, "results": results, "next_after_id": next_after})


def _image_path(job_id: int, result_id: int) -> tuple[Path, int]:
    with sessions(read_only=True)() as session:
        job = get_job(session=session, job_id=job_id, viewer=current_viewer())
        result = session.get(ImageResult, result_id)
        if job is None or result is None or result.job_id != job_id:
            raise ApiError(404, "not_found", f"job {job_id} has no result {result_id}")
        root, relpath, frame = Path(job.source_path), result.relpath, result.frame
    path = file_at(root, relpath)
    try:
        inside = (
            resolves_inside(root, settings().source_roots)
            and not path.is_symlink()
            and path.resolve(strict=True).is_relative_to(root.resolve())
        )
    except OSError:
        inside = False
    if not inside:
        raise ApiError(404, "not_found", f"the image {relpath} is no longer in the job's source folder")
    return path, frame


@bp.get("/jobs/<int:job_id>/results/<int:result_id>/thumbnail")
def thumbnail_route(job_id: int, result_id: int) -> Response:
    """A small PNG of the image (`?size=full`: the whole slice, up to 1024 px a side, grey levels
    as the model reads them: DICOM windowed), rendered from the source file (JPEG, PNG, BMP, TIFF
    or DICOM) in a memory-capped preview process; never cached, since it shows a patient's pixels."""
    path, frame = _image_path(job_id, result_id)
    size = request.args.get("size", "")
    if size not in ("", "full"):
        raise ApiError(400, "bad_request", f"size must be full or absent, not {size!r}")
    side = FULL_SIDE if size == "full" else THUMBNAIL_SIDE
    try:
        png = previews.render(path, max_pixels=settings().max_image_pixels, frame=frame, side=side)
    except ThumbnailError as exc:
        raise ApiError(422, "unreadable_image", f"the image cannot be shown: {exc}") from None
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-store"})
