"""The OpenAPI 3.1 document of the REST API, served at /api/v1/openapi.json (a test checks every route)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from brainscan import __version__
from db.models import JOB_STATUSES, REVIEW_VERDICTS
from db.studies import FLAGGED, NOT_ASSESSED, NOT_FLAGGED

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

Obj = dict[str, Any]
INT, NUM, STR, BOOL = {"type": "integer"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}
TIME = {"type": ["string", "null"], "format": "date-time"}
VERDICT = {"type": "string", "enum": [FLAGGED, NOT_FLAGGED, NOT_ASSESSED]}
REVIEW_VERDICT = {"type": "string", "enum": list(REVIEW_VERDICTS)}


def _nullable(schema: Obj) -> Obj:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> Obj:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Obj, description: str) -> Obj:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> Obj:
    return {str(status): {"$ref": f"#/components/responses/E{status}"} for status in statuses}


def _param(name: str, where: str, schema: Obj, description: str, required: bool = False) -> Obj:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


JOB_ID = _param("job_id", "path", INT, "The job's id.")
CONFUSION = {
    "type": "object",
    "properties": {k: INT for k in ("tp", "fp", "tn", "fn")},
    "required": ["tp", "fp", "tn", "fn"],
}
SCHEMAS: Obj = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": STR, "message": STR},
            }
        },
    },
    "Confusion": _nullable(CONFUSION),
    "Job": {
        "type": "object",
        "required": ["id", "status", "total", "scored", "failed", "flagged", "confusion"],
        "properties": {
            "id": INT,
            "status": {"type": "string", "enum": list(JOB_STATUSES)},
            "url": STR,
            "source": STR,
            "source_kind": {"type": "string", "enum": ["folder", "upload", "dicomweb"]},
            "submitted_by": STR,
            "team": _nullable(STR),
            "model_version": STR,
            "threshold": NUM,
            "priority": {"type": "string", "enum": ["routine", "stat"]},
            "return_to": {
                "type": "array",
                "items": STR,
                "description": "destinations (BRAINSCAN_DICOM_DESTINATIONS) its DICOM studies' results "
                "go to when it succeeds; a study received over DICOM names every configured one",
            },
            "batch_size": INT,
            "total": INT,
            "scored": INT,
            "failed": INT,
            "flagged": INT,
            "skipped": INT,
            "skipped_reasons": {
                "type": "object",
                "description": "files skipped while planning, counted by reason (a report, a DICOMDIR...)",
                "additionalProperties": INT,
            },
            "remaining": INT,
            "failed_permanently": _nullable(
                {
                    **INT,
                    "description": "of `failed`, the images whose bytes are no usable slice (corrupt, "
                    "not an image, too small): a re-run does not try them again (one job's report; "
                    "null in a list of jobs)",
                }
            ),
            "notifications": _nullable(
                {
                    "type": "array",
                    "description": "webhooks of the job's ends (worker/notify.py) and how their delivery "
                    "went (one job's report; null in a list of jobs)",
                    "items": {
                        "type": "object",
                        "properties": {
                            "event": STR,
                            "attempts": INT,
                            "delivered_at": TIME,
                            "gave_up_at": TIME,
                            "last_error": _nullable(STR),
                        },
                    },
                }
            ),
            "deliveries": _nullable(
                {
                    "type": "array",
                    "description": "each DICOM study's results (an SR and a Key Object Selection of its "
                    "flagged slices, worker/pacs.py) per destination, and how their delivery went (one "
                    "job's report; null in a list of jobs)",
                    "items": {
                        "type": "object",
                        "properties": {
                            "study_uid": STR,
                            "destination": STR,
                            "state": {
                                "type": "string",
                                "enum": ["pending", "retrying", "delivered", "given up"],
                            },
                            "verdict": _nullable(STR),
                            "objects": INT,
                            "attempts": INT,
                            "next_at": TIME,
                            "delivered_at": TIME,
                            "gave_up_at": TIME,
                            "last_error": _nullable(STR),
                        },
                    },
                }
            ),
            "site_thresholds": _nullable(
                {
                    "type": "array",
                    "description": "sites whose profile some of the job's DICOM series took (a job "
                    "submitted without a threshold): their images are flagged at that threshold, not "
                    "the job's (one job's report; null in a list of jobs)",
                    "items": {
                        "type": "object",
                        "properties": {"site": STR, "threshold": NUM, "profile": INT, "series": INT},
                    },
                }
            ),
            "unreadable_labelled": _nullable(
                {
                    "type": "object",
                    "description": "images with a label that could not be read, by label: in no "
                    "figure of the matrix (one job's report; null in a list of jobs)",
                    "properties": {"tumour": INT, "no_tumour": INT},
                }
            ),
            "drift": _nullable(
                {
                    "type": "object",
                    "description": "shift against the model's held-out slices (one job's report; null "
                    "in a list of jobs): the worse of the score histogram's population stability "
                    "index and the out-of-distribution share",
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "watch", "shifted", "unknown"]},
                        "psi": _nullable(NUM),
                        "flag_rate": _nullable(NUM),
                        "reference_flag_rate": _nullable(NUM),
                        "images": INT,
                        "out_of_distribution": {
                            **_nullable(NUM),
                            "description": "share of the scored images unlike the training images "
                            "(training.ood; about 0.01 in-source): above 0.05 `watch`, above 0.10 "
                            "`shifted`; null where the model has no out-of-distribution reference",
                        },
                    },
                }
            ),
            "studies": _nullable(
                {
                    "type": "object",
                    "description": "one job's studies counted (null in a list of jobs)",
                    "properties": {"total": INT, "flagged": INT, "not_assessed": INT},
                }
            ),
            "batches": {"type": "object", "properties": {"total": INT, "done": INT, "failed": INT}},
            "confusion": _ref("Confusion"),
            "recall": _nullable(NUM),
            "specificity": _nullable(NUM),
            "progress": _nullable(NUM),
            "images_per_second": _nullable(NUM),
            "eta_seconds": _nullable(NUM),
            "created_at": {**TIME, "description": "submitted"},
            "planned_at": {
                **TIME,
                "description": "planning finished: every image listed. Scoring starts with the first "
                "planned batch, so `started_at` is usually earlier; null while planning",
            },
            "started_at": {
                **TIME,
                "description": "a worker claimed this run's first batch; null until then (queued behind "
                "other jobs) and again from a re-run until its first batch is claimed",
            },
            "finished_at": TIME,
            "rerun_at": {**TIME, "description": "when failed images were last sent again; null if never"},
            "seconds": {
                **NUM,
                "description": "elapsed: from `rerun_at` (or `created_at`) to `finished_at` (or now)",
            },
            "error": _nullable(STR),
        },
    },
    "Batch": {
        "type": "object",
        "properties": {
            "id": INT,
            "index": INT,
            "status": STR,
            "size": INT,
            "scored": INT,
            "failed": INT,
            "flagged": INT,
            "confusion": _ref("Confusion"),
            "attempts": INT,
            "requeued_because": _nullable(STR),
            "seconds": _nullable(NUM),
            "started_at": TIME,
            "finished_at": TIME,
            "error": _nullable(STR),
        },
    },
    "Result": {
        "type": "object",
        "properties": {
            "id": INT,
            "path": STR,
            "frame": {"type": "integer", "description": "0: the file is one image; 1..: a frame of it"},
            "label": _nullable(INT),
            "probability": _nullable(NUM),
            "flagged": _nullable(BOOL),
            "status": {"type": "string", "enum": ["pending", "scored", "error"]},
            "error": _nullable(STR),
            "batch_id": INT,
            "out_of_distribution": {
                **_nullable(BOOL),
                "description": "the slice is unlike the model's training images (its pooled features "
                "lie beyond the card's ood threshold); null where the model has no such reference",
            },
            "ood_distance": _nullable(NUM),
            "assessment": {
                "type": ["string", "null"],
                "enum": ["flagged", "not flagged", "not assessed", None],
                "description": "not assessed: unflagged but out of distribution, so its negative "
                "means little; null until scored",
            },
        },
    },
    "Study": {
        "type": "object",
        "description": "A study (a folder, for images outside DICOM): flagged when any image of a "
        "series the model is fit for is flagged; score: the highest such probability.",
        "properties": {
            "study_uid": STR,
            "verdict": VERDICT,
            "score": _nullable(NUM),
            "images": INT,
            "flagged_images": INT,
            "pending": INT,
            "series": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "series_uid": STR,
                        "description": STR,
                        "plane": STR,
                        "verdict": VERDICT,
                        "reason": _nullable(STR),
                        "images": INT,
                        "flagged_images": INT,
                        "score": _nullable(NUM),
                    },
                },
            },
        },
    },
    "Model": {
        "type": "object",
        "properties": {
            "version": STR,
            "is_current": BOOL,
            "threshold": NUM,
            "sha256": STR,
            "registered_at": TIME,
            "metrics": {"type": "object"},
            "plots": {"type": "object", "additionalProperties": STR},
            "card": {"type": "object"},
        },
    },
    "Submission": {
        "type": "object",
        "description": "One of `source` (a folder) or `dicomweb` (studies to retrieve); an archive "
        "is uploaded as multipart/form-data instead.",
        "properties": {
            "source": {"type": "string", "description": "A folder relative to the archive root."},
            "dicomweb": {
                "type": "object",
                "required": ["url", "study"],
                "description": "Retrieve the studies with WADO-RS from a DICOMweb root under "
                "BRAINSCAN_DICOMWEB_SOURCES, within the upload limits; their results go back to "
                "every configured destination",
                "properties": {
                    "url": {"type": "string", "format": "uri"},
                    "study": {
                        "oneOf": [
                            {"type": "string"},
                            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 100},
                        ],
                        "description": "StudyInstanceUID(s)",
                    },
                },
            },
            "threshold": {"type": "number", "minimum": 0, "maximum": 1},
            "batch_size": {"type": "integer", "minimum": 1, "maximum": 4096},
            "priority": {
                "type": "string",
                "enum": ["routine", "stat"],
                "default": "routine",
                "description": "stat: the job's batches go to their own queue, which workers take "
                "from as often as from the routine one, so a small urgent study is not scored after "
                "a large archive",
            },
        },
    },
}
ERROR_TEXT = {
    400: "Malformed request or refused input.",
    401: "No valid token or web session.",
    403: "The token lacks the scope.",
    404: "Not found.",
    409: "Not possible in the job's state.",
    413: "Upload or archive over a limit.",
    507: "The disk quota (BRAINSCAN_DISK_QUOTA_GB) is full of files that running jobs still need.",
    415: "Not a .zip, .tar.gz or .tgz archive.",
    422: "The image cannot be decoded, or an Idempotency-Key was reused for another request.",
    503: "Not ready (no model registered, or a dependency down).",
}
JOB_RESPONSE = _json(_ref("Job"), "The job.")
SITE = {
    "name": "site",
    "in": "path",
    "required": True,
    "schema": STR,
    "description": "A DICOM manufacturer / station, or a folder job's top folder.",
}


def _op(
    summary: str,
    responses: Obj,
    *,
    params: list[Obj] | None = None,
    body: Obj | None = None,
    public: bool = False,
) -> Obj:
    op: Obj = {"summary": summary, "parameters": params or [], "responses": responses}
    if body is not None:
        op["requestBody"] = body
    if public:
        op["security"] = []
    return op


SUBMIT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": _ref("Submission")},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["archive"],
                "properties": {
                    "archive": {"type": "string", "format": "binary", "description": ".zip, .tar.gz or .tgz"},
                    "threshold": NUM,
                    "batch_size": INT,
                },
            }
        },
    },
}
RESULT_FILTERS = [
    _param("flagged", "query", BOOL, "Only flagged (true) or unflagged (false) images."),
    _param("false_negatives", "query", BOOL, "Only labelled tumours the model missed."),
    _param("errors", "query", BOOL, "Only images that could not be scored."),
    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size (default 100)."),
    _param("after_id", "query", INT, "The last result id of the previous page."),
    _param("format", "query", {"type": "string", "enum": ["csv", "json"]}, "Download every match, streamed."),
]
PATHS: Obj = {
    "/healthz": {"get": _op("Liveness", {"200": _json({"type": "object"}, "Serving.")}, public=True)},
    "/readyz": {
        "get": _op(
            "Readiness: database and broker reachable",
            {"200": _json({"type": "object"}, "Ready."), **_errors(401, 503)},
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics",
            {
                "200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": STR}}},
                **_errors(401),
            },
        )
    },
    "/api/v1/openapi.json": {
        "get": _op("This document", {"200": _json({"type": "object"}, "OpenAPI 3.1."), **_errors(401)})
    },
    "/api/v1/jobs": {
        "post": _op(
            "Submit a folder under the archive root (JSON) or an archive (multipart)",
            {
                "202": JOB_RESPONSE,
                "200": _json(_ref("Job"), "The job that already holds this Idempotency-Key."),
                **_errors(400, 401, 403, 413, 415, 422, 503, 507),
            },
            body=SUBMIT_BODY,
            params=[
                _param(
                    "Idempotency-Key",
                    "header",
                    STR,
                    "Repeat a submission safely: same caller, same key and request, same job.",
                )
            ],
        ),
        "get": _op(
            "List jobs, newest first",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "jobs": {"type": "array", "items": _ref("Job")},
                            "next_before_id": _nullable(INT),
                        },
                    },
                    "A page.",
                ),
                **_errors(400, 401, 403),
            },
            params=[
                _param(
                    "status", "query", {"type": "string", "enum": list(JOB_STATUSES)}, "Only this status."
                ),
                _param(
                    "limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size (50)."
                ),
                _param("before_id", "query", INT, "The last job id of the previous page."),
            ],
        ),
    },
    "/api/v1/jobs/{job_id}": {
        "get": _op(
            "One job: counts, confusion matrix, progress, ETA",
            {"200": JOB_RESPONSE, **_errors(401, 403, 404)},
            params=[JOB_ID],
        )
    },
    "/api/v1/jobs/{job_id}/batches": {
        "get": _op(
            "The job's batches with their confusion matrices",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"job_id": INT, "batches": {"type": "array", "items": _ref("Batch")}},
                    },
                    "Batches in planning order.",
                ),
                **_errors(401, 403, 404),
            },
            params=[JOB_ID],
        )
    },
    "/api/v1/jobs/{job_id}/results": {
        "get": _op(
            "The job's per-image results (paged, or a download)",
            {
                "200": {
                    "description": "A page (JSON), or every match as CSV or JSON (streamed).",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "job_id": INT,
                                    "results": {"type": "array", "items": _ref("Result")},
                                    "next_after_id": _nullable(INT),
                                },
                            }
                        },
                        "text/csv": {"schema": STR},
                    },
                },
                **_errors(400, 401, 403, 404),
            },
            params=[JOB_ID, *RESULT_FILTERS],
        )
    },
    "/api/v1/jobs/{job_id}/studies": {
        "get": _op(
            "The job's studies with their verdicts, flagged first",
            {
                "200": {
                    "description": "A page of studies (JSON), or every study as CSV.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "job_id": INT,
                                    "total": INT,
                                    "items": {"type": "array", "items": _ref("Study")},
                                    "next_offset": _nullable(INT),
                                },
                            }
                        },
                        "text/csv": {"schema": STR},
                    },
                },
                **_errors(400, 401, 403, 404),
            },
            params=[
                JOB_ID,
                _param(
                    "limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size (50)."
                ),
                _param("offset", "query", {"type": "integer", "minimum": 0}, "Studies to skip."),
                _param(
                    "format", "query", {"type": "string", "enum": ["csv"]}, "csv: every study, one row each."
                ),
            ],
        )
    },
    "/api/v1/jobs/{job_id}/review-queue": {
        "get": _op(
            "The next images to review: flagged ones by descending score, then a fixed random 2 % "
            "sample of the unflagged ones (without it, missed tumours cannot be estimated)",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {"job_id": INT, "items": {"type": "array", "items": _ref("Result")}},
                    },
                    "Unreviewed images.",
                ),
                **_errors(400, 401, 403, 404),
            },
            params=[
                JOB_ID,
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "How many (50)."),
            ],
        )
    },
    "/api/v1/jobs/{job_id}/results/{result_id}/review": {
        "post": _op(
            "Record a radiologist's verdict on one scored image (needs the review scope; audited)",
            {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "result_id": INT,
                            "verdict": REVIEW_VERDICT,
                            "reviewer": STR,
                            "at": TIME,
                        },
                    },
                    "The verdict now stored (it replaces an earlier one).",
                ),
                **_errors(400, 401, 403, 404),
            },
            params=[JOB_ID, _param("result_id", "path", INT, "The result's id.")],
            body={
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["verdict"],
                            "properties": {"verdict": REVIEW_VERDICT},
                        }
                    }
                },
            },
        )
    },
    "/api/v1/jobs/{job_id}/reviewed": {
        "get": _op(
            "What the verdicts say: the reviewed matrix, and recall and specificity estimated from "
            "the flagged images and the unflagged sample, with 95 % Clopper-Pearson intervals",
            {"200": _json({"type": "object"}, "Reviewed figures."), **_errors(401, 403, 404)},
            params=[JOB_ID],
        )
    },
    "/api/v1/sites/{site}/suggestion": {
        "get": _op(
            "The threshold a site's reviewed images support at a recall target, and what it gives there",
            {
                "200": _json(
                    {"type": "object"},
                    "The suggestion (threshold null, with a reason, when too few reviews).",
                ),
                **_errors(400, 401, 403, 503),
            },
            params=[SITE, _param("recall", "query", {"type": "number"}, "Recall target (0.95).")],
        )
    },
    "/api/v1/sites/{site}/profiles": {
        "get": _op(
            "Every version of a site's profile (its own threshold per model version), newest first",
            {"200": _json({"type": "object"}, "The site's profiles."), **_errors(401, 403)},
            params=[SITE],
        ),
        "post": _op(
            "Set the site's threshold for the current model: a threshold, or a recall target to take "
            "the suggestion (admin scope; audited; the version before is retired, not deleted)",
            {"201": _json({"type": "object"}, "The new profile."), **_errors(400, 401, 403, 409, 503)},
            params=[SITE],
            body={
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "properties": {"threshold": NUM, "recall": NUM}}
                    }
                },
            },
        ),
        "delete": _op(
            "Retire the site's profile: its jobs take the model's threshold again (admin scope; audited)",
            {"200": _json({"type": "object"}, "The retired profile."), **_errors(401, 403, 404, 503)},
            params=[SITE],
        ),
    },
    "/api/v1/jobs/{job_id}/results/{result_id}/thumbnail": {
        "get": _op(
            "A small PNG of one source image",
            {
                "200": {
                    "description": "PNG.",
                    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                },
                **_errors(401, 403, 404, 422),
            },
            params=[JOB_ID, _param("result_id", "path", INT, "The result's id.")],
        )
    },
    "/api/v1/jobs/{job_id}/cancel": {
        "post": _op(
            "Cancel an unfinished job (audited)",
            {"200": JOB_RESPONSE, **_errors(401, 403, 404, 409)},
            params=[JOB_ID],
        )
    },
    "/api/v1/jobs/{job_id}/rerun": {
        "post": _op(
            "Score a finished job's failed images again (audited)",
            {"202": JOB_RESPONSE, **_errors(401, 403, 404, 409)},
            params=[JOB_ID],
        )
    },
    "/api/v1/jobs/{job_id}/deliveries": {
        "post": _op(
            "Send a succeeded job's study results (DICOM SR and KOS) to the PACS again, or to other "
            "destinations (audited); the workers send them within a watchdog interval",
            {"202": JOB_RESPONSE, **_errors(400, 401, 403, 404, 409)},
            params=[JOB_ID],
            body={
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "destinations": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "description": "names in BRAINSCAN_DICOM_DESTINATIONS; default: the "
                                    "job's return_to, else every configured one",
                                }
                            },
                        }
                    }
                },
            },
        )
    },
    "/api/v1/models": {
        "get": _op(
            "Registered model versions, newest first",
            {
                "200": _json(
                    {"type": "object", "properties": {"models": {"type": "array", "items": _ref("Model")}}},
                    "Models.",
                ),
                **_errors(401, 403),
            },
        )
    },
    "/api/v1/models/current": {
        "get": _op(
            "The model new jobs use, with its card",
            {"200": _json(_ref("Model"), "The current model."), **_errors(401, 403, 404)},
        )
    },
    "/api/v1/models/{version}/plots/{name}": {
        "get": _op(
            "A training plot named in the model card",
            {
                "200": {
                    "description": "PNG.",
                    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                },
                **_errors(401, 403, 404),
            },
            params=[
                _param("version", "path", STR, "Model version."),
                _param("name", "path", STR, "Plot name from the card."),
            ],
        )
    },
}


def openapi_document() -> Obj:
    """The whole document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "brainscan",
            "version": __version__,
            "description": "Brain MRI tumour screening as batch jobs. Tokens: `brainscan token create "
            "--scope read|submit|all-jobs|admin`; GET needs read, POST needs submit; "
            "other callers' jobs (not the team's) need all-jobs.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": {f"E{status}": _json(_ref("Error"), text) for status, text in ERROR_TEXT.items()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token."},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "brainscan_session",
                    "description": "A web login (POSTs also need the X-CSRFToken header).",
                },
            },
        },
    }


@bp.get("/openapi.json")
def openapi_route() -> Response:
    """The OpenAPI document."""
    return jsonify(openapi_document())
