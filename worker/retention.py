"""Uploads and received studies do not pile up: their files are deleted a while after their job
finishes.

Runs from the watchdog. It walks the upload and received folders (which pruning keeps small),
not the jobs table, so its cost does not grow with the job history. An upload folder no job
points to (a submission that failed half-way) and a stray partial upload are deleted once they
are an hour old. A received study's delivery (`received/<study>/<delivery>`) goes
`received_retention_hours` after the job made of it finished; one with no job yet is still
arriving (or waits for a model) and stays. Each deletion of received files is audited
(`retention.delete`, with the job); the results stay in the database.

With a disk quota (`disk_quota_gb`), what the upload, received and DICOMweb folders hold is kept
under it: when they hold more, the folders of finished jobs go first, the longest finished first,
before their retention time (audited with `"reason": "disk quota"`); what a job still needs is
never deleted, so the listener refuses new instances (and the API new uploads) while the quota is
full.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from brainscan.disk import folder_bytes, kept_bytes
from brainscan.settings import Settings
from db.audit import record_event
from db.jobs import FINISHED_JOB_STATUSES
from db.models import Job, utcnow

log = logging.getLogger(__name__)
ORPHAN_AGE = timedelta(hours=1)  # an upload in progress or being submitted is younger than this


def prune_uploads(
    *, sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> list[Path]:
    """Delete upload folders (and DICOMweb jobs' folders) whose job finished over
    settings.upload_retention_hours ago, and orphans; returns what was deleted. A retention of 0
    keeps every one."""
    if settings.upload_retention_hours <= 0:
        return []
    now = now or utcnow()
    keep_after = now - timedelta(hours=settings.upload_retention_hours)
    deleted = []
    for folder, kind in ((settings.upload_dir, "upload"), (settings.pulled_dir, "dicomweb")):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.resolve().iterdir()):  # absolute, as jobs record them
            modified = datetime.fromtimestamp(entry.lstat().st_mtime, tz=now.tzinfo)
            if now - modified < ORPHAN_AGE:
                continue
            with sessions() as session:
                job = session.scalars(
                    select(Job).where(Job.source_kind == kind, Job.source_path == str(entry))
                ).first()
                expired = job is None or (
                    job.status in FINISHED_JOB_STATUSES
                    and job.finished_at is not None
                    and job.finished_at < keep_after
                )
            if expired:
                _delete(entry)
                deleted.append(entry)
    if deleted:
        log.info("retention: deleted %d upload(s) past their retention", len(deleted))
    return deleted


def prune_received(
    *, sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> list[Path]:
    """Delete received deliveries whose job finished over settings.received_retention_hours ago
    (and a study's folder once it holds none); returns the deliveries deleted."""
    root = settings.received_dir.resolve()
    if settings.received_retention_hours <= 0 or not root.is_dir():
        return []
    now = now or utcnow()
    keep_after = now - timedelta(hours=settings.received_retention_hours)
    deleted = []
    for study in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        for delivery in sorted(p for p in study.iterdir() if p.is_dir() and not p.is_symlink()):
            with sessions.begin() as session:
                job = session.scalars(
                    select(Job).where(Job.source_kind == "folder", Job.source_path == str(delivery))
                ).first()
                if job is None or job.status not in FINISHED_JOB_STATUSES or job.finished_at is None:
                    continue
                if job.finished_at >= keep_after:
                    continue
                _delete(delivery)
                record_event(
                    session=session,
                    actor="retention",
                    action="retention.delete",
                    job_id=job.id,
                    detail={"what": "received files", "folder": str(delivery.relative_to(root))},
                )
            deleted.append(delivery)
        if not any(study.iterdir()):
            study.rmdir()
    if deleted:
        log.info("retention: deleted %d received delivery folder(s) past their retention", len(deleted))
    return deleted


def prune_to_quota(*, sessions: sessionmaker[Session], settings: Settings) -> list[Path]:
    """Delete finished jobs' folders, the longest finished first, until the upload, received and
    DICOMweb folders fit the disk quota; returns what was deleted. Nothing without a quota."""
    quota = settings.disk_quota_bytes
    if not quota:
        return []
    used = kept_bytes(settings)
    if used <= quota:
        return []
    candidates = [settings.upload_dir.resolve() / p.name for p in _children(settings.upload_dir)]
    candidates += [settings.pulled_dir.resolve() / p.name for p in _children(settings.pulled_dir)]
    candidates += [d for study in _children(settings.received_dir.resolve()) for d in _children(study)]
    with sessions() as session:
        finished = session.execute(
            select(Job.source_path, Job.id, Job.finished_at)
            .where(
                Job.source_path.in_([str(c) for c in candidates]),
                Job.status.in_(FINISHED_JOB_STATUSES),
                Job.finished_at.is_not(None),
            )
            .order_by(Job.finished_at, Job.id)
        ).all()
    deleted = []
    for source_path, job_id, _ in finished:
        if used <= quota:
            break
        folder = Path(source_path)
        size = folder_bytes(folder)
        with sessions.begin() as session:
            _delete(folder)
            record_event(
                session=session,
                actor="retention",
                action="retention.delete",
                job_id=job_id,
                detail={"what": "job files", "reason": "disk quota", "bytes": size},
            )
        used -= size
        deleted.append(folder)
        if folder.parent.parent == settings.received_dir.resolve() and not any(folder.parent.iterdir()):
            folder.parent.rmdir()
    if used > quota:
        log.warning(
            "disk quota: %.1f GB kept for jobs still running or queued, over the %.1f GB quota; "
            "new instances and uploads are refused until they finish",
            used / 1024**3,
            quota / 1024**3,
        )
    if deleted:
        log.info("disk quota: deleted %d finished job folder(s) to fit %.1f GB", len(deleted), quota / 2**30)
    return deleted


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _delete(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
