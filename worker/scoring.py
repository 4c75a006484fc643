"""score_batch: score a batch's pending images and record them; safe to run twice on one batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.batches import (
    DEFAULT_LEASE,
    claim_batch,
    fail_batch,
    finish_batch,
    hand_back_batches,
    reclaim_batch,
    renew_lease,
)
from db.jobs import get_job
from db.progress import finish_job_if_complete
from db.results import PendingImage, ScoredImage, pending_images, record_results
from training.dataset import file_at, resolves_inside
from training.scorer import Scorer
from worker.heartbeat import Heartbeat

SHUT_DOWN = "its worker was shut down and handed it back"
OUTSIDE = "the job's folder now leads outside the archive root (a link changed since it was submitted)"

log = logging.getLogger(__name__)


class ModelMismatch(RuntimeError):
    """This worker's model is not the one the job was submitted for."""


class TakenBack(RuntimeError):
    """The batch is no longer this worker's (handed back at shutdown, or its lease lapsed): stop
    scoring it and write nothing; its new holder scores it."""


@dataclass(frozen=True)
class Claimed:
    """What a worker needs from SQL to score a batch it now owns."""

    batch_id: int
    job_id: int
    attempts: int
    root: Path
    threshold: float
    model_version: str
    pending: list[PendingImage]


def claim(sessions: sessionmaker[Session], batch_id: int, worker: str, lease: float) -> Claimed | None:
    """Own the batch for `lease` seconds (or take it back after a retry of this same task); None:
    nothing to do."""
    with sessions.begin() as session:
        batch = claim_batch(session=session, batch_id=batch_id, worker=worker, lease=lease)
        if batch is None:
            batch = reclaim_batch(session=session, batch_id=batch_id, worker=worker, lease=lease)
        if batch is None:
            return None
        job = get_job(session=session, job_id=batch.job_id)
        assert job is not None
        return Claimed(
            batch.id,
            job.id,
            batch.attempts,
            Path(job.source_path),
            job.threshold,
            job.model_version,
            pending_images(session=session, batch_id=batch_id),
        )


def confined(root: Path, relpath: str) -> Path | str:
    """The file's path, or why it may not be read: it must stay inside the job's folder."""
    path = file_at(root, relpath)
    if path.is_symlink():
        return "symbolic links are not followed"
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except OSError as exc:
        return f"cannot resolve path: {exc}"
    return path if inside else "path leads outside the job's source folder"


def score_claimed(
    work: Claimed, scorer: Scorer, held: Callable[[], bool] = lambda: True
) -> list[ScoredImage]:
    """Decode and score every pending image; unreadable ones get a reason, never an exception.
    TakenBack as soon as `held()` says the batch is no longer ours."""
    if work.model_version != scorer.version:
        raise ModelMismatch(f"job needs model {work.model_version}; this worker has {scorer.version}")
    results: list[ScoredImage] = []
    readable: list[tuple[PendingImage, Path]] = []
    for image in work.pending:
        where = confined(work.root, image.relpath)
        if isinstance(where, str):
            # a link, or a path out of the folder: refused the same way every time
            results.append(ScoredImage(image.relpath, None, None, where, None, image.frame, True))
        else:
            readable.append((image, where))
    sources = ((path, image.frame) if image.frame else path for image, path in readable)
    scores = scorer.iter_scores(sources, with_hash=True)
    for (image, _), r in zip(readable, scores, strict=True):
        if not held():
            raise TakenBack(f"batch {work.batch_id} was taken back while it was scored")
        threshold = work.threshold if image.threshold is None else image.threshold  # a site's, per series
        flagged = None if r.probability is None else r.probability >= threshold
        results.append(
            ScoredImage(
                image.relpath,
                r.probability,
                flagged,
                r.error,
                r.sha256,
                image.frame,
                r.error_permanent,
                r.ood_distance,
                r.out_of_distribution,
            )
        )
    return results


def score(
    batch_id: int,
    *,
    sessions: sessionmaker[Session],
    scorer: Scorer,
    worker: str,
    max_attempts: int,
    roots: Sequence[Path],
    lease: float = DEFAULT_LEASE,
    stopping: Callable[[], bool] = lambda: False,
) -> str:
    """Claim, score (renewing the lease meanwhile), record, finish: returns 'skipped', 'done',
    'failed', 'taken back' (another holder has it now) or 'handed back' (`stopping()` became true:
    this worker is shutting down; the batch is queued again and its message must be re-sent)."""
    work = claim(sessions, batch_id, worker, lease)
    if work is None:
        log.info("batch %s: nothing to do (done, cancelled or owned by another worker)", batch_id)
        return "skipped"
    if work.attempts > max_attempts:
        give_up(
            sessions,
            batch_id,
            work.job_id,
            f"gave up after {max_attempts} attempts (the worker was lost each time)",
        )
        return "failed"
    started = time.perf_counter()
    with Heartbeat(
        sessions,
        lambda s: renew_lease(session=s, batch_id=batch_id, worker=worker, lease=lease),
        period=lease / 3,
        what=f"batch {batch_id}",
    ) as heartbeat:
        if not resolves_inside(work.root, roots):  # nothing is read from wherever the folder now leads
            results = [
                ScoredImage(image.relpath, None, None, OUTSIDE, None, image.frame) for image in work.pending
            ]
        else:
            try:
                results = score_claimed(work, scorer, lambda: heartbeat.held() and not stopping())
            except TakenBack as exc:
                if stopping():
                    return hand_back(sessions, batch_id, worker)
                log.warning("%s; stopped, nothing written", exc)
                return "taken back"
    with sessions.begin() as session:
        record_results(session=session, job_id=work.job_id, batch_id=batch_id, results=results)
        finish_batch(session=session, batch_id=batch_id, seconds=time.perf_counter() - started)
    with sessions.begin() as session:  # after our commit: the last batch always sees all done
        finish_job_if_complete(session=session, job_id=work.job_id)
    return "done"


def hand_back(sessions: sessionmaker[Session], batch_id: int, worker: str) -> str:
    """This worker is shutting down: its batch back to the queue, the attempt not counted.
    'handed back' when this call did it (its message is to be re-sent), else 'taken back' (the
    worker's main process, or the watchdog, got there first and sent it again)."""
    with sessions.begin() as session:
        handed = hand_back_batches(session=session, holder_prefix=worker, because=SHUT_DOWN)
    log.warning(
        "batch %s: this worker is shutting down; stopped, nothing written, %s",
        batch_id,
        "handed back" if handed else "already handed back",
    )
    return "handed back" if handed else "taken back"


def give_up(sessions: sessionmaker[Session], batch_id: int, job_id: int, error: str) -> None:
    """Fail the batch (its pending images get the reason) and let the job finish if it can."""
    log.error("batch %s: %s", batch_id, error)
    with sessions.begin() as session:
        fail_batch(session=session, batch_id=batch_id, error=error)
    with sessions.begin() as session:
        finish_job_if_complete(session=session, job_id=job_id)
