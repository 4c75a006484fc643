"""Uploads are deleted a while after their job finishes; orphans and stray partial uploads too."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from brainscan.testing import Service
from db.jobs import create_job
from db.models import Job, utcnow
from worker.retention import prune_uploads


def _job_of(
    service: Service, file: Path, *, source: str, kind: str, finished_hours_ago: float | None
) -> Path:
    """`file` written, and a job of its folder's parent (`source`, `kind`), finished that long ago
    or still running; the job's folder."""
    folder = file.parent.parent
    file.parent.mkdir(parents=True)
    file.write_bytes(b"image")
    with service.sessions().begin() as session:
        job, _ = create_job(
            session=session,
            source=source,
            source_kind=kind,
            source_path=str(folder),
            submitted_by="test",
            model_version="m",
            threshold=0.5,
            batch_size=4,
        )
        if finished_hours_ago is not None:
            session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(status="succeeded", finished_at=utcnow() - timedelta(hours=finished_hours_ago))
            )
    return folder


def _upload(service: Service, name: str, *, finished_hours_ago: float | None, age_hours: float = 100) -> Path:
    """An extracted upload folder (aged `age_hours`) with its job, finished that long ago or running."""
    file = service.settings.upload_dir / name / "yes" / "a.png"
    folder = _job_of(
        service, file, source=f"{name}.zip", kind="upload", finished_hours_ago=finished_hours_ago
    )
    _age(folder, age_hours)
    return folder


def _age(path: Path, hours: float) -> None:
    moment = (utcnow() - timedelta(hours=hours)).timestamp()
    os.utime(path, (moment, moment))


def test_uploads_past_retention_and_orphans_are_deleted_the_rest_kept(embedded: Service) -> None:
    old = _upload(embedded, "finished-4-days-ago", finished_hours_ago=96)
    recent = _upload(embedded, "finished-yesterday", finished_hours_ago=24)
    running = _upload(embedded, "still-running", finished_hours_ago=None)
    orphan = embedded.settings.upload_dir / "20261201-000000-dead"  # its submission failed half-way
    orphan.mkdir()
    _age(orphan, 2)
    fresh = embedded.settings.upload_dir / "upload-x.part"  # an upload arriving now
    fresh.write_bytes(b"zip bytes")
    stray = embedded.settings.upload_dir / "upload-y.part"  # left by a request that died
    stray.write_bytes(b"zip bytes")
    _age(stray, 3)
    settings = embedded.settings
    deleted = prune_uploads(sessions=embedded.sessions(), settings=settings)
    assert sorted(deleted) == sorted([old, orphan, stray])
    assert recent.is_dir() and running.is_dir() and fresh.is_file() and not old.exists()
    keep_all = replace(settings, upload_retention_hours=0)
    assert prune_uploads(sessions=embedded.sessions(), settings=keep_all) == []
    later = prune_uploads(sessions=embedded.sessions(), settings=settings, now=utcnow() + timedelta(hours=72))
    assert sorted(later) == sorted([recent, fresh])  # their turn comes; the running job's stays


def test_received_deliveries_go_after_their_job_and_each_deletion_is_audited(embedded: Service) -> None:
    from db.audit import list_events
    from worker.retention import prune_received

    root = embedded.settings.received_dir.resolve()

    def delivery(study: str, number: int, finished_hours_ago: float | None) -> Path:
        file = root / study / str(number) / "1.2.3" / "1.2.3.4.dcm"
        source = f"received/{study}/{number}"
        return _job_of(embedded, file, source=source, kind="folder", finished_hours_ago=finished_hours_ago)

    old = delivery("1.1", 1, finished_hours_ago=96)
    follow_up = delivery("1.1", 2, finished_hours_ago=1)
    running = delivery("1.2", 1, finished_hours_ago=None)
    arriving = root / "1.3" / "1" / "1.2.3"  # still arriving: no job yet
    arriving.mkdir(parents=True)
    assert prune_received(sessions=embedded.sessions(), settings=embedded.settings) == [old]
    assert follow_up.is_dir() and running.is_dir() and arriving.is_dir() and not old.exists()
    later = prune_received(
        sessions=embedded.sessions(), settings=embedded.settings, now=utcnow() + timedelta(hours=72)
    )
    assert later == [follow_up] and not (root / "1.1").exists()  # the study's folder goes with its last
    with embedded.sessions()() as session:
        events = list_events(session=session, action="retention.delete")
    assert [e.detail for e in events] == [
        {"what": "received files", "folder": "1.1/2"},
        {"what": "received files", "folder": "1.1/1"},
    ]
    assert all(e.actor == "retention" and e.job_id is not None for e in events)
    keep_all = replace(embedded.settings, received_retention_hours=0)
    assert (
        prune_received(sessions=embedded.sessions(), settings=keep_all, now=utcnow() + timedelta(days=9))
        == []
    )


def _filled(folder: Path, size: int) -> Path:
    """`folder` with one more file of `size` bytes in it."""
    (folder / f"fill-{size}.bin").write_bytes(b"\0" * size)
    return folder


def test_a_full_disk_quota_deletes_the_longest_finished_first_and_keeps_what_jobs_need(
    embedded: Service,
) -> None:
    from brainscan.disk import QuotaGauge, kept_bytes
    from db.audit import list_events
    from worker.retention import prune_to_quota

    root = embedded.settings.received_dir.resolve()
    mib = 2**20
    oldest = _filled(_upload(embedded, "finished-2h-ago", finished_hours_ago=2), mib)
    older = _filled(
        _job_of(
            embedded, root / "1.1" / "1" / "s" / "a.dcm", source="r", kind="folder", finished_hours_ago=1
        ),
        mib,
    )
    newest = _filled(_upload(embedded, "finished-now", finished_hours_ago=0.01), mib)
    running = _filled(_upload(embedded, "running", finished_hours_ago=None), mib)
    quota = replace(embedded.settings, disk_quota_gb=2.5 * mib / 2**30)  # room for two and a half
    assert QuotaGauge(quota).full() and not QuotaGauge(embedded.settings).full(10**15)  # 0: no quota
    deleted = prune_to_quota(sessions=embedded.sessions(), settings=quota)
    assert deleted == [oldest, older] and not (root / "1.1").exists()
    assert newest.is_dir() and running.is_dir() and kept_bytes(quota) <= quota.disk_quota_bytes
    with embedded.sessions()() as session:
        reasons = [e.detail for e in list_events(session=session, action="retention.delete")]
    assert [r["reason"] for r in reasons] == ["disk quota", "disk quota"]
    assert all(r["bytes"] > mib for r in reasons)
    tight = replace(embedded.settings, disk_quota_gb=0.5 * mib / 2**30)
    assert prune_to_quota(sessions=embedded.sessions(), settings=tight) == [newest]  # the running job's stays
    gauge = QuotaGauge(tight)
    assert gauge.full() and running.is_dir()
