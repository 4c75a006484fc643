"""Database benchmark: planning and scoring a 200,000-image job on SQLite and PostgreSQL.

    python bench/db_bench.py --rows 200000 [--sqlite-only] [--postgres URL]

Times, for one job of --rows images: `add_batch` streaming in batches of 256 (what the planner
does), `record_results` upserts in batches of 256 (what each score_batch does), and a repeat of
those upserts (a re-delivered batch, which must change nothing); then the median of 20 calls of
`job_progress`, `job_confusion_from_results` and the first page of flagged / false-negative
listings. Baseline, measured in the same run on the same database: plain ORM inserts, one
`session.add(ImageResult(...))` per image, committed every 256 images, on a 10,000-image sample.
Targets (issue 3): >= 20,000 rows/s on PostgreSQL and >= 10,000 rows/s on SQLite for both writes;
progress < 50 ms on PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db.batches import PlannedImage, add_batch, claim_batch, finish_batch
from db.engine import make_engine, session_factory
from db.jobs import create_job, finish_planning, mark_planning
from db.migrate import upgrade
from db.models import ImageResult
from db.progress import job_confusion_from_results, job_progress
from db.results import ScoredImage, iter_results, list_results, record_results

BATCH = 256  # the service's default batch size
BASELINE_ROWS = 10_000
CALLS = 20
TARGET_ROWS_PER_S = {"postgresql": 20_000, "sqlite": 10_000}


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="brainscan-bench-") as folder:
        yield f"sqlite:///{folder}/bench.db"


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    name = f"brainscan_bench_{secrets.token_hex(4)}"
    admin = create_engine(f"{server.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server.rstrip('/')}/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def planned(rows: int, rng: random.Random) -> list[PlannedImage]:
    return [
        PlannedImage(
            f"patient-{i // 150:05d}/slice-{i % 150:03d}.dcm",
            rng.randint(20_000, 600_000),
            rng.choice((0, 1, None)),
        )
        for i in range(rows)
    ]


def scored(images: list[PlannedImage], rng: random.Random) -> list[ScoredImage]:
    out = []
    for image in images:
        if rng.random() < 0.01:
            out.append(ScoredImage(image.relpath, None, None, error="truncated file"))
        else:
            p = rng.random()
            out.append(ScoredImage(image.relpath, p, p >= 0.5, content_hash=secrets.token_hex(32)))
    return out


def new_job(maker: sessionmaker[Session], source: str) -> int:
    with maker.begin() as session:
        job, _ = create_job(
            session=session,
            source=source,
            source_kind="folder",
            source_path=f"/a/{source}",
            submitted_by="bench",
            model_version="bench",
            threshold=0.5,
            batch_size=BATCH,
        )
        mark_planning(session=session, job_id=job.id)
        return job.id


def baseline(maker: sessionmaker[Session], rows: int, rng: random.Random) -> float:
    """Rows/s of one ORM object per image, committed every BATCH images."""
    job_id = new_job(maker, "baseline")
    images = planned(rows, rng)
    with maker.begin() as session:
        batch_id = add_batch(session=session, job_id=job_id, index=0, images=[])
    started = time.perf_counter()
    for start in range(0, rows, BATCH):
        with maker.begin() as session:
            for image in images[start : start + BATCH]:
                session.add(
                    ImageResult(
                        job_id=job_id,
                        batch_id=batch_id,
                        relpath=image.relpath,
                        size_bytes=image.size_bytes,
                        label=image.label,
                        status="pending",
                    )
                )
    return rows / (time.perf_counter() - started)


def median_ms(maker: sessionmaker[Session], call: Callable[[Session], object]) -> float:
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        with maker() as session:
            call(session)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def time_writes(maker: sessionmaker[Session], job_id: int, rows: int, rng: random.Random) -> dict[str, float]:
    """Plan the job with add_batch, then upsert every batch's results twice, as workers would."""
    images = planned(rows, rng)
    chunks = [images[start : start + BATCH] for start in range(0, rows, BATCH)]
    started = time.perf_counter()
    batch_ids = []
    for n, chunk in enumerate(chunks):
        with maker.begin() as session:
            batch_ids.append(add_batch(session=session, job_id=job_id, index=n, images=chunk))
    figures = {"add_batch": rows / (time.perf_counter() - started)}
    with maker.begin() as session:
        finish_planning(session=session, job_id=job_id, total=rows, skipped={})
        for batch_id in batch_ids:
            claim_batch(session=session, batch_id=batch_id, worker="bench")
    outcomes = [scored(chunk, rng) for chunk in chunks]
    for name in ("record_results", "record_results_again"):
        started = time.perf_counter()
        for batch_id, results in zip(batch_ids, outcomes, strict=True):
            with maker.begin() as session:
                record_results(session=session, job_id=job_id, batch_id=batch_id, results=results)
        figures[name] = rows / (time.perf_counter() - started)
    for batch_id in batch_ids:
        with maker.begin() as session:
            finish_batch(session=session, batch_id=batch_id, seconds=1.0)
    return figures


def time_reads(reader: sessionmaker[Session], job_id: int, rows: int) -> dict[str, float]:
    """What the web view and the API ask of a finished 200,000-image job."""
    figures = {
        "job_progress_ms": median_ms(reader, lambda s: job_progress(session=s, job_id=job_id)),
        "confusion_ms": median_ms(reader, lambda s: job_confusion_from_results(session=s, job_id=job_id)),
        "flagged_page_ms": median_ms(reader, lambda s: list_results(session=s, job_id=job_id, flagged=True)),
        "false_negatives_page_ms": median_ms(
            reader, lambda s: list_results(session=s, job_id=job_id, false_negatives=True)
        ),
    }
    started = time.perf_counter()
    with reader() as session:
        streamed = sum(1 for _ in iter_results(session=session, job_id=job_id))
    figures["iter_results"] = streamed / (time.perf_counter() - started)
    return figures


def run(url: str, rows: int) -> dict[str, float]:
    upgrade(url)
    engine = make_engine(url)
    maker, reader = session_factory(engine), session_factory(engine, read_only=True)
    rng = random.Random(3)
    figures = {"baseline": baseline(maker, min(rows, BASELINE_ROWS), rng)}
    job_id = new_job(maker, "bench")
    figures |= time_writes(maker, job_id, rows, rng)
    figures |= time_reads(reader, job_id, rows)
    engine.dispose()
    return figures


def report(dialect: str, rows: int, figures: dict[str, float]) -> None:
    base, target = figures["baseline"], TARGET_ROWS_PER_S[dialect]
    print(f"\n{dialect}: {rows:,} images, batches of {BATCH}")
    print(f"  {'baseline (ORM add, one object per row)':40s} {base:>10,.0f} rows/s")
    for name in ("add_batch", "record_results", "record_results_again"):
        value = figures[name]
        verdict = "ok" if value >= target else "BELOW TARGET"
        print(
            f"  {name:40s} {value:>10,.0f} rows/s  x{value / base:5.1f} vs baseline  "
            f"(target {target:,}: {verdict})"
        )
    for name in ("job_progress_ms", "confusion_ms", "flagged_page_ms", "false_negatives_page_ms"):
        print(f"  {name:40s} {figures[name]:>10.2f} ms (median of {CALLS})")
    print(f"  {'iter_results (CSV export stream)':40s} {figures['iter_results']:>10,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL without a database name",
    )
    args = parser.parse_args()
    busy = subprocess.run(["pgrep", "-f", "brainscan train"], capture_output=True, text=True).stdout.split()
    if busy:
        print(f"note: a training run is competing for the CPU (pids {', '.join(busy)})")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with sqlite_database() as url:
        report("sqlite", args.rows, run(url, args.rows))
    if not args.sqlite_only:
        with postgres_database(args.postgres) as url:
            report("postgresql", args.rows, run(url, args.rows))


if __name__ == "__main__":
    main()
