"""plan_job: walk a job's source once, streaming, and turn it into queued batches of images."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.batches import PlannedImage, add_batch
from db.jobs import fail_job, finish_planning, get_job, mark_planning
from training.dataset import iter_records, resolves_inside, storable_relpath

log = logging.getLogger(__name__)
CANCEL_CHECK_EVERY = 20  # batches between looks at whether the job was cancelled meanwhile


class SourceError(Exception):
    """The job's source cannot be walked at all."""


def _check_source(source_path: str, roots: Sequence[Path]) -> Path:
    root = Path(source_path)
    if not root.exists():
        raise SourceError(f"source folder not found: {source_path}")
    if not root.is_dir():
        raise SourceError(f"source is not a folder: {source_path}")
    if not resolves_inside(root, roots):
        raise SourceError(
            "the source folder now leads outside the archive root (a link changed since "
            "it was submitted); nothing was read"
        )
    return root


def plan(
    job_id: int,
    *,
    sessions: sessionmaker[Session],
    enqueue: Callable[[list[int]], object],
    roots: Sequence[Path],
) -> int:
    """Record every image of the job in batches, enqueueing each batch as soon as it is committed.

    Scoring starts while a large archive is still being walked; the job becomes 'running' (and
    may finish at once) when the walk ends. Returns the number of images planned.
    """
    with sessions.begin() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None or not mark_planning(session=session, job_id=job_id):
            log.info("job %s: nothing to plan (missing, cancelled or already planned)", job_id)
            return 0
        source_path, batch_size = job.source_path, job.batch_size
    try:
        root = _check_source(source_path, roots)
    except SourceError as exc:
        with sessions.begin() as session:
            fail_job(session=session, job_id=job_id, error=str(exc))
        return 0
    skipped = 0

    def count_skip(_relpath: str) -> None:
        nonlocal skipped
        skipped += 1

    total, index, chunk = 0, 0, []
    for record in iter_records(root, on_skip=count_skip):
        chunk.append(PlannedImage(storable_relpath(record.relpath), _size(record.path), record.label))
        if len(chunk) == batch_size:
            _flush(sessions, enqueue, job_id, index, chunk)
            total, index, chunk = total + len(chunk), index + 1, []
            if index % CANCEL_CHECK_EVERY == 0 and not _still_planning(sessions, job_id):
                log.info("job %s: stopped planning after %d images (cancelled)", job_id, total)
                return total
    if chunk:
        _flush(sessions, enqueue, job_id, index, chunk)
        total += len(chunk)
    with sessions.begin() as session:
        finish_planning(session=session, job_id=job_id, total=total, skipped=skipped)
    log.info(
        "job %s: planned %d images in %d batches, skipped %d other files",
        job_id,
        total,
        index + bool(chunk),
        skipped,
    )
    return total


def _still_planning(sessions: sessionmaker[Session], job_id: int) -> bool:
    with sessions() as session:
        job = get_job(session=session, job_id=job_id)
        return job is not None and job.status == "planning"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # vanished since the walk: scoring will record why


def _flush(
    sessions: sessionmaker[Session],
    enqueue: Callable[[list[int]], object],
    job_id: int,
    index: int,
    chunk: list[PlannedImage],
) -> None:
    with sessions.begin() as session:
        batch_id = add_batch(session=session, job_id=job_id, index=index, images=chunk)
    enqueue([batch_id])  # after the commit, so a fast worker always finds the batch
