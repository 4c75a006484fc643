"""What a lost worker and a Redis restart cost a job, against the same job undisturbed, in one run.

    python bench/recovery_bench.py [--images 20000] [--batch-size 256]

On Redis + PostgreSQL with the production settings (time limits 600/660 s, visibility timeout
3600 s, lease 15 s, watchdog every 10 s, a queued batch resent after 30 s in an empty queue):
four jobs over the same N-image folder, each with a warm worker, one process per core: (1)
undisturbed (the baseline); (2) the whole worker SIGKILLed once a fifth of the batches are done,
a new worker started 3 s later (its model load counts); (3) the same with SIGTERM to the
worker's main process, as `docker stop` sends it (it hands its batches back and exits); (4)
redis-server SIGKILLed (no persistence: its queue is lost) once half of them are done, restarted
3 s later. Each job must
end succeeded with every image scored once; the table gives each job's seconds and what the
disturbance cost (its seconds minus the baseline's). Goal (issue 38): under 60 s each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import func, select  # noqa: E402

from brainscan.testing import PrivateRedis, Service, WorkerProcess, build_folder, fresh_postgres_database  # noqa: E402
from db.batches import list_batches  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import ImageResult  # noqa: E402

MODEL = REPO / "models" / "brainscan.keras"
Disturbance = Callable[["Run"], None]


class Run:
    """One job on a fresh database and a private Redis, with a worker that a disturbance may kill."""

    def __init__(self, workdir: Path, database_url: str, archive_root: Path) -> None:
        workdir.joinpath("data").mkdir(parents=True, exist_ok=True)
        self.workdir, self.redis = workdir, PrivateRedis(workdir)
        self.service = Service(
            {
                "BRAINSCAN_ENV": "test",
                "BRAINSCAN_DATA_DIR": str(workdir / "data"),
                "BRAINSCAN_MODEL_PATH": str(MODEL),
                "BRAINSCAN_DATABASE_URL": database_url,
                "BRAINSCAN_BROKER_URL": self.redis.url,
                "BRAINSCAN_ARCHIVE_ROOT": str(archive_root),
            }
        )
        upgrade(database_url)
        self.workers = 0
        self.worker = self.new_worker()

    def new_worker(self) -> WorkerProcess:
        self.workers += 1
        log = self.workdir / f"worker{self.workers}.log"
        worker = WorkerProcess(self.service, concurrency=os.cpu_count() or 1, log=log)
        worker.wait_ready()
        return worker

    def done_batches(self, job_id: int) -> tuple[int, int]:
        with self.service.sessions()() as session:
            batches = list_batches(session=session, job_id=job_id)
        return sum(b.status == "done" for b in batches), len(batches)

    def job(
        self, folder: Path, images: int, batch_size: int, disturb: Disturbance | None, at: float
    ) -> float:
        time.sleep(1)
        started = time.perf_counter()
        job_id, _ = self.service.submit(folder, batch_size=batch_size)
        disturbed = disturb is None
        while self.service.job(job_id).status not in ("succeeded", "failed"):
            done, total = self.done_batches(job_id)
            if not disturbed and total and done >= at * total:
                assert disturb is not None
                disturb(self)
                disturbed = True
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        job = self.service.job(job_id)
        with self.service.sessions()() as session:
            rows = session.scalar(select(func.count()).where(ImageResult.job_id == job_id))
            distinct = session.scalar(
                select(func.count(func.distinct(ImageResult.relpath))).where(ImageResult.job_id == job_id)
            )
        assert job.status == "succeeded" and job.total == rows == distinct == images, (job.status, rows)
        return seconds

    def close(self) -> None:
        self.worker.stop()
        self.redis.kill()


def kill_worker(run: Run) -> None:
    run.worker.kill()
    run.worker.stop()
    time.sleep(3)
    run.worker = run.new_worker()


def stop_worker(run: Run) -> None:
    run.worker.terminate()
    run.worker.stop()
    time.sleep(3)
    run.worker = run.new_worker()


def kill_redis(run: Run) -> None:
    run.redis.kill()
    time.sleep(3)
    run.redis.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    cases: list[tuple[str, Disturbance | None, float]] = [
        ("undisturbed (baseline)", None, 0.0),
        ("worker SIGKILLed at 20 %", kill_worker, 0.2),
        ("worker SIGTERMed at 20 %", stop_worker, 0.2),
        ("Redis SIGKILLed at 50 %", kill_redis, 0.5),
    ]
    with tempfile.TemporaryDirectory(prefix="brainscan-recovery-") as tmp:
        folder = build_folder(args.data, Path(tmp) / "archive" / "recovery", args.images)
        print(f"{args.images} images, {os.cpu_count()} cores, batch {args.batch_size}")
        baseline = None
        for i, (name, disturb, at) in enumerate(cases):
            with fresh_postgres_database(f"brainscan_recovery_{i}") as url:
                run = Run(Path(tmp) / f"run{i}", url, folder.parent)
                try:
                    seconds = run.job(folder, args.images, args.batch_size, disturb, at)
                finally:
                    run.close()
            baseline = seconds if baseline is None else baseline
            lost = "" if disturb is None else f"   lost {seconds - baseline:6.1f} s (goal < 60)"
            print(f"{name:<26} {seconds:7.1f} s{lost}", flush=True)


if __name__ == "__main__":
    main()
