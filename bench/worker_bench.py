"""End-to-end job throughput against `brainscan evaluate` on the same folder, in the same run.

    python bench/worker_bench.py [--images 5000] [--modes embedded,scaleout] [--batch-size 256]

For each deployment: start `brainscan worker` with one process per core, wait until every process
has loaded the model (warm), submit a job for an N-image folder, and time:
  first batch   submission -> first batch done (issue 4 target: < 3 s)
  job           submission -> job succeeded; images/s = N / that time
The baseline is `brainscan evaluate FOLDER --json` (its images_per_second excludes model loading)
measured in the same run. Targets: job/evaluate >= 0.85 on Redis + PostgreSQL, >= 0.75 embedded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from brainscan.testing import (  # noqa: E402
    BRAINSCAN,
    FAST_TIMINGS,
    Service,
    WorkerProcess,
    build_folder,
    fresh_postgres_database,
)
from db.batches import list_batches  # noqa: E402
from db.migrate import upgrade  # noqa: E402

MODEL = REPO / "models" / "brainscan.keras"


def evaluate_rate(folder: Path) -> float:
    out = subprocess.run(
        [BRAINSCAN, "evaluate", str(folder), "--model", str(MODEL), "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out)["images_per_second"])


def run_job(service: Service, folder: Path, images: int, batch_size: int, log: Path) -> tuple[float, float]:
    """(seconds to the first batch done, job images/s) with a warm worker."""
    worker = WorkerProcess(service, concurrency=os.cpu_count() or 1, log=log)
    try:
        worker.wait_ready()
        time.sleep(1)  # let the pool settle after loading
        submitted = time.perf_counter()
        job_id, _ = service.submit(folder, batch_size=batch_size)
        first = None
        while True:
            with service.sessions()() as session:
                done = any(b.status == "done" for b in list_batches(session=session, job_id=job_id))
            if done and first is None:
                first = time.perf_counter() - submitted
            if service.job(job_id).status in ("succeeded", "failed"):
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - submitted
        job = service.job(job_id)
        assert job.status == "succeeded" and job.total == images, job.error
        return first or elapsed, images / elapsed
    finally:
        worker.stop()


def service_for(mode: str, workdir: Path, stack: list[object]) -> Service:
    env = {
        "BRAINSCAN_ENV": "test",
        "BRAINSCAN_DATA_DIR": str(workdir / mode),
        "BRAINSCAN_MODEL_PATH": str(MODEL),
        **FAST_TIMINGS,
        "BRAINSCAN_BATCH_SOFT_TIME_LIMIT": "120",
        "BRAINSCAN_BATCH_TIME_LIMIT": "150",
        "BRAINSCAN_VISIBILITY_TIMEOUT": "300",
        "BRAINSCAN_REQUEUE_AFTER": "60",
    }
    (workdir / mode).mkdir()
    if mode == "scaleout":
        import redis

        database = fresh_postgres_database("brainscan_bench")
        env["BRAINSCAN_DATABASE_URL"] = database.__enter__()
        stack.append(database)
        env["BRAINSCAN_BROKER_URL"] = "redis://127.0.0.1:6379/15"
        redis.Redis.from_url(env["BRAINSCAN_BROKER_URL"]).flushdb()
    service = Service(env)
    upgrade(service.settings.resolved_database_url)
    return service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--modes", default="embedded,scaleout")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    stack: list[object] = []
    with tempfile.TemporaryDirectory(prefix="brainscan-bench-") as tmp:
        workdir = Path(tmp)
        folder = build_folder(args.data, workdir / "archive" / "bench", args.images)
        for f in folder.rglob("*"):
            if f.is_file():
                f.read_bytes()  # page cache warm for both sides alike
        baseline = evaluate_rate(folder)
        print(f"{args.images} images, {os.cpu_count()} cores, batch {args.batch_size}")
        print(f"{'brainscan evaluate (baseline)':<34} {baseline:7.0f} images/s")
        try:
            for mode in args.modes.split(","):
                service = service_for(mode, workdir, stack)
                first, rate = run_job(service, folder, args.images, args.batch_size, workdir / f"{mode}.log")
                target = 0.85 if mode == "scaleout" else 0.75
                print(
                    f"{mode + ' job':<34} {rate:7.0f} images/s   ratio {rate / baseline:.2f} "
                    f"(target >= {target})   first batch {first:.2f} s (target < 3)"
                )
        finally:
            for database in stack:
                database.__exit__(None, None, None)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
