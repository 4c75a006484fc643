"""Uploads and received studies do not pile up: their files are deleted a while after their job
finishes.

Runs from the watchdog. It walks the upload and received folders (which pruning keeps small),
not the jobs table, so its cost does not grow with the job history. An upload folder no job
points to (a submission that failed half-way) and a stray partial upload are deleted once they
are an hour old. A received study's delivery (`received/<study>/<delivery>`) goes
`received_retention_hours` after the job made of it finished; one with no job yet is still
arriving (or waits for a model) and stays. Each deletion of received files is audited
(`retention.delete`, with the job); the results stay in the database.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from db.audit import record_event
from db.jobs import FINISHED_JOB_STATUSES
from db.models import Job, utcnow

log = logging.getLogger(__name__)
ORPHAN_AGE = timedelta(hours=1)  # an upload in progress or being submitted is younger than this


def prune_uploads(
    *, sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> list[Path]:
    """Delete upload folders whose job finished over settings.upload_retention_hours ago, and
    orphans; returns what was deleted. A retention of 0 keeps every upload."""
    if settings.upload_retention_hours <= 0 or not settings.upload_dir.is_dir():
        return []
    now = now or utcnow()
    keep_after = now - timedelta(hours=settings.upload_retention_hours)
    deleted = []
    for entry in sorted(settings.upload_dir.resolve().iterdir()):  # absolute, as jobs record them
        modified = datetime.fromtimestamp(entry.lstat().st_mtime, tz=now.tzinfo)
        if now - modified < ORPHAN_AGE:
            continue
        with sessions() as session:
            job = session.scalars(
                select(Job).where(Job.source_kind == "upload", Job.source_path == str(entry))
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


def _delete(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
