"""plan_job: walk a job's source once, streaming, and turn it into queued batches of images."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.batches import PlannedImage, add_batch
from db.jobs import beat_planner, fail_job, finish_planning, get_job, mark_planning
from db.series import SeriesFound, add_series
from training.dataset import iter_records, resolves_inside, storable_relpath
from training.dicom_header import NotAnImage
from worker.headers import images_of
from worker.heartbeat import Heartbeat
from worker.pull import PullError

log = logging.getLogger(__name__)
CANCEL_CHECK_EVERY = 20  # batches between looks at whether the job was cancelled meanwhile
PLANNER_BEAT = 10.0  # seconds between the planner's heartbeats (the watchdog waits PLAN_STALL)


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


NOT_AN_IMAGE = "not an image file (by its name)"


@dataclass
class SeriesBook:
    """The job's series met so far: ids of those recorded, and those still to record."""

    ids: dict[str, int] = field(default_factory=dict)
    new: dict[str, SeriesFound] = field(default_factory=dict)
    described: dict[str, SeriesFound] = field(default_factory=dict)  # DICOM series by UID, for images_of
    profiles_of: str | None = None  # the job's model version when its series take site profiles

    def note(self, series: SeriesFound) -> None:
        if series.series_key not in self.ids:
            self.new.setdefault(series.series_key, series)

    def record(self, session: Session, job_id: int) -> None:
        found = list(self.new.values())
        self.ids.update(
            add_series(session=session, job_id=job_id, series=found, profiles_of=self.profiles_of)
        )
        self.new.clear()


def is_stat(sessions: sessionmaker[Session], job_id: int) -> bool:
    """Whether the job is `stat` (its batches go to the stat queue)."""
    with sessions() as session:
        job = get_job(session=session, job_id=job_id)
        return job is not None and job.priority == "stat"


def plan(
    job_id: int,
    *,
    sessions: sessionmaker[Session],
    enqueue: Callable[[list[int]], object],
    roots: Sequence[Path],
    patient_key: bytes,
    fetch: Callable[[dict[str, Any], Path], object] | None = None,
) -> int:
    """Record every image of the job in batches, enqueueing each batch as soon as it is committed.

    Each DICOM file's header gives its series and frames (one image per frame), or the reason it
    holds nothing to screen; `patient_key` keys the hash kept of PatientID. Scoring starts while a
    large archive is still being walked; the job becomes 'running' (and may finish at once) when
    the walk ends. A DICOMweb job's studies are first retrieved into its folder with `fetch`
    (worker.pull.retrieve with the settings). Returns the number of images planned.
    """
    with sessions.begin() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None or not mark_planning(session=session, job_id=job_id):
            log.info("job %s: nothing to plan (missing, cancelled or already planned)", job_id)
            return 0
        source_path, batch_size, pull = job.source_path, job.batch_size, job.pull
        book = SeriesBook(profiles_of=job.model_version if job.site_profiles else None)
    with Heartbeat(
        sessions, lambda s: beat_planner(session=s, job_id=job_id), period=PLANNER_BEAT, what=f"job {job_id}"
    ):
        try:
            if pull is not None:
                if fetch is None:
                    raise SourceError("this planner cannot retrieve over DICOMweb")
                fetch(pull, Path(source_path))
            root = _check_source(source_path, roots)
        except (SourceError, PullError) as exc:
            with sessions.begin() as session:
                fail_job(session=session, job_id=job_id, error=str(exc))
            return 0
        return _walk(
            job_id,
            root,
            sessions=sessions,
            enqueue=enqueue,
            batch_size=batch_size,
            patient_key=patient_key,
            book=book,
        )


def _walk(
    job_id: int,
    root: Path,
    *,
    sessions: sessionmaker[Session],
    enqueue: Callable[[list[int]], object],
    batch_size: int,
    patient_key: bytes,
    book: SeriesBook,
) -> int:
    """The walk itself: batches recorded and sent as they fill, then the job running."""
    skipped: Counter[str] = Counter()
    total, index, chunk = 0, 0, []
    for record in iter_records(root, on_skip=lambda _relpath: skipped.update([NOT_AN_IMAGE])):
        found = images_of(record, key=patient_key, seen=book.described)
        if isinstance(found, NotAnImage):
            skipped[found.reason] += 1
            continue
        if found.series is not None:
            book.note(found.series)
        relpath, size = storable_relpath(record.relpath), _size(record.path)
        for frame in found.frames:
            image = PlannedImage(relpath, size, record.label, None, found.instance_number, frame)
            chunk.append((image, found.series.series_key if found.series else None))
            if len(chunk) == batch_size:
                _flush(sessions, enqueue, job_id, index, chunk, book)
                total, index, chunk = total + len(chunk), index + 1, []
                if index % CANCEL_CHECK_EVERY == 0 and not _still_planning(sessions, job_id):
                    log.info("job %s: stopped planning after %d images (cancelled)", job_id, total)
                    return total
    if chunk:
        _flush(sessions, enqueue, job_id, index, chunk, book)
        total += len(chunk)
    with sessions.begin() as session:
        finish_planning(session=session, job_id=job_id, total=total, skipped=dict(skipped))
    log.info(
        "job %s: planned %d images of %d series in %d batches, skipped %d other files",
        job_id,
        total,
        len(book.ids),
        index + bool(chunk),
        skipped.total(),
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
    chunk: list[tuple[PlannedImage, str | None]],
    book: SeriesBook,
) -> None:
    with sessions.begin() as session:
        book.record(session, job_id)  # in the batch's transaction: no image row without its series
        images = [replace(image, series_id=book.ids[key]) if key else image for image, key in chunk]
        batch_id = add_batch(session=session, job_id=job_id, index=index, images=images)
    enqueue([batch_id])  # after the commit, so a fast worker always finds the batch
