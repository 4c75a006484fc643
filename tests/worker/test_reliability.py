"""Real workers, real PostgreSQL and Redis: kill them, cut them off; nothing is lost or doubled."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from brainscan.cli import main
from brainscan.testing import FlakyProxy, PrivateRedis, Service, WorkerProcess, build_folder, running_worker
from db.batches import list_batches
from db.models import ImageResult
from db.progress import job_confusion_from_results
from tests.conftest import SHIPPED_MODEL, load_bench
from tests.images import create_random_slice, encoded, save_image
from worker.watchdog import LOST_WORKER

pytestmark = [pytest.mark.slow, pytest.mark.data]
_evaluations: dict[Path, tuple[int, int, int, int]] = {}


def evaluate(folder: Path) -> tuple[int, int, int, int]:
    """tp, fp, tn, fn of `brainscan evaluate FOLDER --json` with the shipped model."""
    if folder not in _evaluations:
        result = CliRunner().invoke(main, ["evaluate", str(folder), "--model", str(SHIPPED_MODEL), "--json"])
        report = json.loads(result.stdout)
        _evaluations[folder] = (report["tp"], report["fp"], report["tn"], report["fn"])
    return _evaluations[folder]


def wait_for_batches(service: Service, job_id: int, done: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with service.sessions()() as session:
            batches = list_batches(session=session, job_id=job_id)
        if sum(b.status == "done" for b in batches) >= done and any(b.status == "running" for b in batches):
            return
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} never had {done} batches done with one running")


def assert_complete_and_exact(service: Service, job_id: int, folder: Path, images: int) -> None:
    job = service.wait(job_id, timeout=240)
    assert job.status == "succeeded", job.error
    assert job.total == images
    with service.sessions()() as session:
        rows = session.scalar(select(func.count()).where(ImageResult.job_id == job_id))
        distinct = session.scalar(
            select(func.count(func.distinct(ImageResult.relpath))).where(ImageResult.job_id == job_id)
        )
        scored = session.scalar(
            select(func.count()).where(ImageResult.job_id == job_id, ImageResult.status == "scored")
        )
        from_rows = job_confusion_from_results(session=session, job_id=job_id)
        batch_sum = [
            sum(getattr(b, k) or 0 for b in list_batches(session=session, job_id=job_id))
            for k in ("tp", "fp", "tn", "fn")
        ]
    assert rows == distinct == images
    matrix = evaluate(folder)
    assert scored == sum(matrix)  # what evaluate could score: lgg-flair holds a blank slice or two
    assert (job.tp, job.fp, job.tn, job.fn) == from_rows == tuple(batch_sum) == matrix


def test_a_job_gives_the_same_matrix_as_evaluate(service: Service, shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "seed-253"
    with running_worker(service, tmp_path / "worker.log"):
        job_id, _ = service.submit(folder, batch_size=64)
        assert_complete_and_exact(service, job_id, folder, 253)


def test_a_dicom_archive_job_matches_evaluate_slice_for_slice(
    embedded: Service, lgg_flair: Path, tmp_path: Path
) -> None:
    """The DICOM test archive (every transfer syntax, a multi-frame file, a report, a DICOMDIR): a
    real worker's job and `brainscan evaluate` score the same slices with the same outcome, and
    `evaluate --level study` counts its three studies."""
    folder = tmp_path / "archive" / "pacs"
    summary = load_bench("dicom_archive").build_archive(lgg_flair, folder, patients=3)
    with running_worker(embedded, tmp_path / "worker.log"):
        job_id, _ = embedded.submit(folder, batch_size=16)
        job = embedded.wait(job_id, timeout=240)
    assert job.status == "succeeded", job.error
    assert job.total == summary.frames and job.skipped == 3
    assert (job.tp, job.fp, job.tn, job.fn) == evaluate(folder)
    args = ["evaluate", str(folder), "--model", str(SHIPPED_MODEL), "--level", "study", "--json"]
    studies = json.loads(CliRunner().invoke(main, args).stdout)
    assert (studies["level"], studies["studies"], studies["n"]) == ("study", 3, 3)
    assert studies["skipped"] == job.skipped_reasons


def submit_and_kill_the_worker(service: Service, folder: Path, log: Path) -> int:
    """Submit a job of 100-image batches to a worker and SIGKILL the whole worker once a batch is
    done and the next is running; the job's id."""
    worker = WorkerProcess(service, concurrency=2, log=log)
    try:
        worker.wait_ready()
        job_id, _ = service.submit(folder, batch_size=100)
        wait_for_batches(service, job_id, done=1)
        worker.kill()
    finally:
        worker.stop()
    return job_id


def test_sigkill_mid_batch_loses_nothing_and_doubles_nothing(
    service: Service, shared_data: Path, tmp_path: Path
) -> None:
    folder = build_folder(shared_data, tmp_path / "archive" / "two-thousand", 2000)
    job_id = submit_and_kill_the_worker(service, folder, tmp_path / "worker1.log")
    with running_worker(service, tmp_path / "worker2.log"):
        assert_complete_and_exact(service, job_id, folder, 2000)


def test_a_killed_worker_costs_its_lease_not_the_batch_time_limit(
    service: Service, shared_data: Path, tmp_path: Path
) -> None:
    """Production time limits (a batch may run 10 minutes) but a 3-second lease: the whole worker
    SIGKILLed mid-batch, a new one started at once; the job resumes and finishes well within a
    minute of the kill, nothing lost or doubled."""
    leased = Service(
        {
            **service.env,
            "BRAINSCAN_BATCH_SOFT_TIME_LIMIT": "590",
            "BRAINSCAN_BATCH_TIME_LIMIT": "600",
            "BRAINSCAN_BATCH_LEASE": "3",
            "BRAINSCAN_VISIBILITY_TIMEOUT": "3600",  # as in production: Redis re-delivers after an hour
        }
    )
    folder = build_folder(shared_data, tmp_path / "archive" / "leased", 1200)
    job_id = submit_and_kill_the_worker(leased, folder, tmp_path / "worker1.log")
    killed_at = time.monotonic()
    with running_worker(leased, tmp_path / "worker2.log"):
        assert_complete_and_exact(leased, job_id, folder, 1200)
        took = time.monotonic() - killed_at
    print(f"job finished {took:.1f} s after the kill")
    assert took < 60
    with leased.sessions()() as session:
        assert any(b.attempts > 1 for b in list_batches(session=session, job_id=job_id))  # taken back


def test_a_worker_shut_down_mid_batch_hands_it_back_at_once(
    service: Service, shared_data: Path, tmp_path: Path
) -> None:
    """SIGTERM to the worker's main process (docker stop, a scale-down) while its pool scores
    400-image batches, with production limits (15-s leases, 10-minute batches): each pool process
    stops between two images and hands its batch back (the reason says so, not a lapsed lease),
    takes no new one, the worker exits in seconds, and a new worker finishes the job, nothing lost
    or doubled."""
    from worker.scoring import SHUT_DOWN

    leased = Service(
        {
            **service.env,
            "BRAINSCAN_BATCH_SOFT_TIME_LIMIT": "590",
            "BRAINSCAN_BATCH_TIME_LIMIT": "600",
            "BRAINSCAN_VISIBILITY_TIMEOUT": "3600",
        }
    )
    folder = build_folder(shared_data, tmp_path / "archive" / "shutdown", 2000)
    log = tmp_path / "worker1.log"
    worker = WorkerProcess(leased, concurrency=2, log=log)
    try:
        worker.wait_ready()
        job_id, _ = leased.submit(folder, batch_size=400)
        wait_for_batches(leased, job_id, done=0)
        exited_in = worker.terminate()
    finally:
        worker.stop()
    text = log.read_text(errors="replace")
    assert "this worker is shutting down; stopped, nothing written" in text, text[-3000:]
    print(f"worker exited {exited_in:.1f} s after SIGTERM")
    assert exited_in < 15
    with leased.sessions()() as session:
        reasons = {b.requeued_because for b in list_batches(session=session, job_id=job_id)}
    assert SHUT_DOWN in reasons and LOST_WORKER not in reasons
    with running_worker(leased, tmp_path / "worker2.log"):
        assert_complete_and_exact(leased, job_id, folder, 2000)


PRODUCTION_TIMINGS = {  # docs/operations.md's defaults: the test shows they are chosen together
    "BRAINSCAN_BATCH_SOFT_TIME_LIMIT": "600",
    "BRAINSCAN_BATCH_TIME_LIMIT": "660",
    "BRAINSCAN_VISIBILITY_TIMEOUT": "3600",
    "BRAINSCAN_WATCHDOG_INTERVAL": "10",
    "BRAINSCAN_REQUEUE_AFTER": "30",
    "BRAINSCAN_BATCH_LEASE": "15",
}


def first_claim_after(service: Service, job_id: int, after: datetime, timeout: float = 120) -> datetime:
    """When a batch of the job was first claimed after `after` (UTC), polled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with service.sessions()() as session:
            claims = [b.started_at for b in list_batches(session=session, job_id=job_id) if b.started_at]
        later = [c.replace(tzinfo=UTC) for c in claims if c.replace(tzinfo=UTC) > after]
        if later:
            return min(later)
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id}: no batch claimed within {timeout} s")


@pytest.mark.parametrize("persistent", [False, True], ids=["no-persistence", "append-only-file"])
def test_a_redis_restart_mid_job_resumes_within_a_minute(
    scaleout: Service, shared_data: Path, tmp_path: Path, persistent: bool
) -> None:
    """Redis SIGKILLed mid-job and started again 2 s later, with the production timings. Without
    persistence every queued message is gone and the watchdog sends the batches again from SQL;
    with an append-only file the queue comes back. Either way a batch is claimed again within a
    minute of the kill and the job completes, nothing lost or doubled."""
    redis = PrivateRedis(tmp_path, appendonly=persistent)
    service = Service({**scaleout.env, **PRODUCTION_TIMINGS, "BRAINSCAN_BROKER_URL": redis.url})
    folder = build_folder(shared_data, tmp_path / "archive" / "redis", 1200)
    try:
        with running_worker(service, tmp_path / "worker.log"):
            job_id, _ = service.submit(folder, batch_size=100)
            wait_for_batches(service, job_id, done=2)
            killed_at = datetime.now(UTC)
            redis.kill()
            time.sleep(2)
            redis.start()
            restarted_at = datetime.now(UTC)
            resumed = (first_claim_after(service, job_id, restarted_at) - killed_at).total_seconds()
            assert_complete_and_exact(service, job_id, folder, 1200)
            took = (datetime.now(UTC) - killed_at).total_seconds()
    finally:
        redis.kill()
    print(f"Redis killed: a batch claimed again {resumed:.1f} s after, the job done {took:.1f} s after")
    assert resumed < 60


def test_postgres_unreachable_for_seconds_then_the_job_completes(
    scaleout: Service, shared_data: Path, tmp_path: Path
) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(scaleout.env["BRAINSCAN_DATABASE_URL"])
    proxy = FlakyProxy(url.port or 5432)
    via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    worker_service = Service({**scaleout.env, "BRAINSCAN_DATABASE_URL": via_proxy})
    folder = build_folder(shared_data, tmp_path / "archive" / "pg", 1200)
    try:
        with running_worker(worker_service, tmp_path / "worker.log"):
            job_id, _ = scaleout.submit(folder, batch_size=100)
            wait_for_batches(scaleout, job_id, done=1)
            proxy.unplug()
            time.sleep(4)
            proxy.plug()
            assert_complete_and_exact(scaleout, job_id, folder, 1200)
    finally:
        proxy.close()


def test_bad_files_are_recorded_and_the_job_succeeds(
    service: Service, shared_data: Path, tmp_path: Path
) -> None:
    folder = build_folder(shared_data, tmp_path / "archive" / "mixed", 40)
    (folder / "no" / "empty.jpg").write_bytes(b"")
    (folder / "no" / "not-an-image.png").write_text("<html>an error page saved as PNG</html>")
    data = encoded(create_random_slice(128, seed=3))
    (folder / "yes" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    save_image(folder / "yes" / "tiny.png", create_random_slice(128)[:8, :8])
    (folder / "report.pdf").write_bytes(b"%PDF-1.4 not an image")
    with running_worker(service, tmp_path / "worker.log", concurrency=1):
        job_id, _ = service.submit(folder, batch_size=16)
        job = service.wait(job_id)
    assert job.status == "succeeded" and job.total == 44 and job.skipped == 1
    with service.sessions()() as session:
        errors = dict(
            session.execute(
                select(ImageResult.relpath, ImageResult.error).where(
                    ImageResult.job_id == job_id, ImageResult.status == "error"
                )
            ).all()
        )
    assert set(errors) == {"no/empty.jpg", "no/not-an-image.png", "yes/truncated.jpg", "yes/tiny.png"}
    assert "empty" in errors["no/empty.jpg"] and "too small" in errors["yes/tiny.png"]


def test_one_idempotency_key_runs_one_job(embedded: Service, shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "seed-253" / "no"
    first, created = embedded.submit(folder, key="dept-7/upload-42")
    again, created_again = embedded.submit(folder, key="dept-7/upload-42")
    assert (first, created) == (again, True) and created_again is False
    with running_worker(embedded, tmp_path / "worker.log", concurrency=1):
        job = embedded.wait(first)
    assert job.status == "succeeded" and job.total == 98
    with embedded.sessions()() as session:
        assert session.scalar(select(func.count()).select_from(ImageResult)) == 98
