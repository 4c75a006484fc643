"""Submitting a job: a folder confined to the archive root, or an uploaded archive; idempotent.

Both the REST endpoint and the web form go through `submission_from_request` and `submit`: the
job takes its model version from the current model, its threshold from the request, else from
its site's profile (a folder job's site is its top folder; db.sites), else from the settings,
else from the model card; it is audited with its submitter and sent to the planner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import request
from werkzeug.datastructures import FileStorage

from api.archives import ARCHIVE_SUFFIXES, ArchiveError, Limits, archive_kind, extract_archive
from api.context import celery, sessions, settings
from api.errors import ApiError
from brainscan.disk import QuotaGauge
from brainscan.settings import Settings
from db.audit import record_event
from db.jobs import KeyReused, create_job
from db.model_versions import current_model_version
from db.sites import active_profile
from worker.enqueue import submit_job

if TYPE_CHECKING:
    from api.auth import Principal

log = logging.getLogger(__name__)
MAX_BATCH_SIZE = 4096  # a batch is one task: far larger ones outlive the task's time limit
MAX_KEY_LENGTH = 255  # the idempotency_key column
NO_MODEL = "no worker has registered a model yet: start a worker (brainscan worker) and try again"
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated request for a job: what to score, where it is on disk, and the options."""

    source: str  # as the submitter named it: a folder under the archive root or an upload's name
    source_kind: str  # folder | upload | dicomweb
    source_path: Path  # a DICOMweb job's: the folder its studies will be retrieved into
    threshold: float | None
    batch_size: int | None
    idempotency_key: str | None
    request_hash: str  # what was asked, so a repeated Idempotency-Key with another request is refused
    priority: str = "routine"  # or "stat": its batches are taken as often as all routine ones together
    pull: dict[str, Any] | None = None  # a DICOMweb job's {"url", "studies"}


PRIORITIES = ("routine", "stat")


def request_hash(
    kind: str, what: str, threshold: float | None, batch_size: int | None, priority: str = "routine"
) -> str:
    """sha256 of a submission's substance: the folder (resolved) or the archive's own sha256, options
    (a routine priority is left out, so keys recorded before priorities existed still match)."""
    canonical: dict[str, object] = {
        "kind": kind,
        "source": what,
        "threshold": threshold,
        "batch_size": batch_size,
    }
    if priority != "routine":
        canonical["priority"] = priority
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _bad(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def confine_folder(root: Path, source: str) -> Path:
    """The folder `source` names under `root`, resolved; 400 unless it stays inside, links included."""
    text = source.strip()
    if not text or "\x00" in text:
        raise _bad("give a folder to score, relative to the archive root, or upload an archive", "bad_source")
    if text.startswith(("/", "\\", "~")) or _DRIVE.match(text):
        raise _bad(f"the folder must be relative to the archive root, not absolute: {text}", "bad_source")
    relative = PurePosixPath(text.replace("\\", "/"))
    if ".." in relative.parts:
        raise _bad(f"the folder must not climb out of the archive root with '..': {text}", "bad_source")
    root = root.resolve()
    try:
        resolved = root.joinpath(*relative.parts).resolve(strict=True)
    except FileNotFoundError:
        raise _bad(f"there is no folder {text} under the archive root", "source_not_found") from None
    except (OSError, RuntimeError) as exc:  # a link loop, a permission problem
        raise _bad(f"the folder {text} cannot be opened: {exc}", "bad_source") from None
    if not resolved.is_relative_to(root):
        raise _bad(f"the folder {text} leads outside the archive root (through a link)", "bad_source")
    if not resolved.is_dir():
        raise _bad(f"{text} is not a folder", "bad_source")
    return resolved


def parse_threshold(value: Any) -> float | None:
    """An optional threshold between 0 and 1 (JSON number or form text)."""
    if value is None or value == "":
        return None
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not 0.0 <= number <= 1.0:
        raise _bad(f"threshold must be a number between 0 and 1, not {value!r}")
    return number


def parse_batch_size(value: Any) -> int | None:
    """An optional batch size between 1 and MAX_BATCH_SIZE (JSON integer or form text)."""
    if value is None or value == "":
        return None
    try:
        number = int(value) if not isinstance(value, bool | float) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not 1 <= number <= MAX_BATCH_SIZE:
        raise _bad(f"batch_size must be a whole number from 1 to {MAX_BATCH_SIZE}, not {value!r}")
    return number


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header, checked."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise _bad(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key.strip()


def _upload_on_disk(upload: FileStorage) -> Path:
    stream: Any = upload.stream
    name = getattr(stream, "name", None)
    if isinstance(name, str) and Path(name).is_file():  # streamed to disk by api.UploadRequest
        stream.flush()
        return Path(name)
    folder = settings().upload_dir
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", suffix=".part", delete=False) as out:
        shutil.copyfileobj(stream, out)
    return Path(out.name)


_GAUGES: dict[tuple[Path, Path, int], QuotaGauge] = {}


def quota_gauge(config: Settings) -> QuotaGauge:
    """This process's gauge of the disk quota (the folders walked at most every 10 s)."""
    key = (config.upload_dir, config.received_dir, config.disk_quota_bytes)
    return _GAUGES.setdefault(key, QuotaGauge(config))


def receive_upload(upload: FileStorage) -> tuple[str, Path, str]:
    """Extract an uploaded archive into a new folder under the upload folder: (its name, the folder,
    the archive's sha256)."""
    name = PurePosixPath((upload.filename or "").replace("\\", "/")).name
    kind = archive_kind(name)
    if kind is None:
        wanted, got = ", ".join(ARCHIVE_SUFFIXES), name or "a file without a name"
        raise ApiError(415, "unsupported_archive", f"upload a {wanted} archive (got {got})")
    config = settings()
    path = _upload_on_disk(upload)
    if quota_gauge(config).full(path.stat().st_size):
        upload.close()
        path.unlink(missing_ok=True)
        raise ApiError(
            507,
            "disk_quota_full",
            f"the disk quota for uploads and received studies ({config.disk_quota_gb:g} GB, "
            "BRAINSCAN_DISK_QUOTA_GB) is full: finished jobs' files are deleted first, so it is full "
            "of jobs still running; try again when they finish",
        )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    dest = config.upload_dir.resolve() / f"{stamp}-{secrets.token_hex(4)}"  # absolute: workers read it
    limits = Limits(
        max_files=config.max_archive_files,
        max_bytes=config.max_archive_bytes,
        max_ratio=config.max_compression_ratio,
        archive_bytes=path.stat().st_size,
    )
    try:
        with path.open("rb") as archive:
            digest = hashlib.file_digest(archive, "sha256").hexdigest()
        extract_archive(path, kind, dest, limits)
    except ArchiveError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ApiError(
            exc.status, "bad_archive" if exc.status == 400 else "archive_too_large", exc.message
        ) from None
    finally:
        upload.close()
        path.unlink(missing_ok=True)
    return name, dest, digest


MAX_PULL_STUDIES = 100
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def parse_pull(value: Any) -> dict[str, Any]:
    """{"url": a DICOMweb root in BRAINSCAN_DICOMWEB_SOURCES, "study": a StudyInstanceUID or a list}
    as the job's `pull` ({"url", "studies"}); 400 otherwise."""
    usage = '"dicomweb" is {"url": "https://pacs/dicom-web", "study": "<StudyInstanceUID>" or a list}'
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise _bad(usage, "bad_dicomweb")
    url = value["url"].strip().rstrip("/")
    config = settings()
    if not config.pull_sources:
        raise ApiError(403, "dicomweb_off", "retrieving over DICOMweb is off: set BRAINSCAN_DICOMWEB_SOURCES")
    if not config.may_pull_from(url):
        raise ApiError(
            403,
            "dicomweb_source_not_allowed",
            f"{url} is not in BRAINSCAN_DICOMWEB_SOURCES ({', '.join(config.pull_sources)})",
        )
    studies = value.get("study")
    studies = [studies] if isinstance(studies, str) else studies
    if not isinstance(studies, list) or not studies or len(studies) > MAX_PULL_STUDIES:
        raise _bad(f"{usage}; at most {MAX_PULL_STUDIES} studies", "bad_dicomweb")
    if not all(isinstance(u, str) and len(u) <= 64 and UID.match(u) for u in studies):
        raise _bad("each study is a StudyInstanceUID: digits and dots, at most 64 characters", "bad_dicomweb")
    return {"url": url, "studies": list(dict.fromkeys(studies))}


def submission_from_request() -> Submission:
    """Read a submission from JSON or from a form (folder field `source` or file field `archive`)."""
    key = idempotency_key()
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields: Any = request.form
        upload = request.files.get("archive")
        if upload is not None and not upload.filename:
            upload = None  # a form's empty file input
    else:
        fields = request.get_json(silent=True)
        if not isinstance(fields, dict):
            raise _bad('send JSON like {"source": "ward-3/2026-11"} or a form upload with field "archive"')
        upload = None
    threshold = parse_threshold(fields.get("threshold"))
    batch_size = parse_batch_size(fields.get("batch_size"))
    priority = fields.get("priority") or "routine"
    if priority not in PRIORITIES:
        raise _bad(f"priority must be routine or stat, not {priority!r}", "bad_priority")
    source = fields.get("source") or ""
    if not isinstance(source, str):
        raise _bad("source must be a folder path (text)", "bad_source")
    if upload is not None and source.strip():
        raise _bad("give either a folder or an archive, not both")
    if "dicomweb" in fields:
        if upload is not None or source.strip():
            raise _bad("give one of a folder, an archive or a DICOMweb study")
        pull = parse_pull(fields["dicomweb"])
        fingerprint = request_hash(
            "dicomweb", json.dumps(pull, sort_keys=True), threshold, batch_size, priority
        )
        folder = settings().pulled_dir.resolve() / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"
        name = f"{urlsplit(pull['url']).netloc} {pull['studies'][0]}"
        if len(pull["studies"]) > 1:
            name += f" and {len(pull['studies']) - 1} more"
        return Submission(name, "dicomweb", folder, threshold, batch_size, key, fingerprint, priority, pull)
    if upload is not None:
        name, folder, digest = receive_upload(upload)
        fingerprint = request_hash("upload", f"sha256:{digest}", threshold, batch_size, priority)
        return Submission(name, "upload", folder, threshold, batch_size, key, fingerprint, priority)
    folder = confine_folder(settings().resolved_archive_root, source)
    fingerprint = request_hash("folder", str(folder), threshold, batch_size, priority)
    return Submission(source.strip(), "folder", folder, threshold, batch_size, key, fingerprint, priority)


def submit(submission: Submission, *, principal: Principal | None) -> tuple[int, bool]:
    """Create (or find, by the caller's idempotency key) the job, audit it and send it to the planner:
    (id, created). The caller owns the job; its team shares it."""
    if principal is None:
        raise ApiError(401, "unauthorized", "this needs an API token or a web login")
    actor, config = principal.actor, settings()
    try:
        with sessions().begin() as session:
            model = current_model_version(session=session)
            if model is None:
                raise ApiError(503, "no_model", NO_MODEL)
            site = PurePosixPath(submission.source).parts[0] if submission.source_kind == "folder" else None
            profile = (
                active_profile(session=session, site=site, model_version=model.version) if site else None
            )
            site_threshold = profile.threshold if profile is not None else None
            chain = (submission.threshold, site_threshold, config.threshold, model.threshold)
            threshold = next(t for t in chain if t is not None)
            job, created = create_job(
                session=session,
                source=submission.source,
                source_kind=submission.source_kind,
                source_path=str(submission.source_path),
                submitted_by=actor,
                model_version=model.version,
                threshold=threshold,
                batch_size=submission.batch_size or config.batch_size,
                team=principal.team,
                idempotency_key=submission.idempotency_key,
                request_hash=submission.request_hash if submission.idempotency_key else None,
                site_profiles=submission.threshold is None,  # a threshold asked for holds for every series
                priority=submission.priority,
                pull=submission.pull,
                return_to=",".join(config.destinations) if submission.source_kind == "dicomweb" else None,
            )
            if created:
                record_event(
                    session=session,
                    actor=actor,
                    action="job.submit",
                    job_id=job.id,
                    detail={
                        "source": submission.source,
                        "kind": submission.source_kind,
                        "threshold": threshold,
                        "site_profile": profile.id if profile and submission.threshold is None else None,
                        "batch_size": job.batch_size,
                        "priority": job.priority,
                        "idempotency_key": submission.idempotency_key,
                    },
                )
            job_id = job.id
    except KeyReused as exc:
        _discard_upload(submission, created=False)
        raise ApiError(422, "idempotency_key_reused", f"{exc}: use a new key for a new submission") from None
    except BaseException:
        _discard_upload(submission, created=False)
        raise
    _discard_upload(submission, created)
    if created:
        try:
            submit_job(celery(), job_id)
        except Exception:  # the job is committed: the watchdog sends a job left queued again
            log.exception("job %s: could not reach the broker; the watchdog will send it", job_id)
    return job_id, created


def _discard_upload(submission: Submission, created: bool) -> None:
    # an upload that made no new job (a repeat, a refusal) leaves nothing behind
    if submission.source_kind == "upload" and not created:
        shutil.rmtree(submission.source_path, ignore_errors=True)
