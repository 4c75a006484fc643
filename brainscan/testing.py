"""Run real brainscan services for tests and benchmarks: worker processes, a private Redis, a fresh
PostgreSQL database, a breakable TCP proxy, folders of real images.

Both tests/ and bench/ import it, so it does not use pytest: a backend that is not reachable raises
BackendUnavailable, which tests/conftest.py turns into a skip (a failure under CI=true).
Redis comes from BRAINSCAN_TEST_REDIS (default redis://127.0.0.1:6379), PostgreSQL from
BRAINSCAN_TEST_POSTGRES (a server URL without a database name, default
postgresql+psycopg://postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from brainscan.settings import Settings, load_settings
from db.engine import dispose_all, get_sessionmaker
from db.jobs import create_job, get_job
from db.models import Job

if TYPE_CHECKING:
    from training.scorer import Scorer

REPO = Path(__file__).resolve().parents[1]  # the checkout (workers run there)
BRAINSCAN = str(Path(sys.executable).with_name("brainscan"))
FAST_TIMINGS = {  # short limits so recovery paths run in seconds, not the production minutes
    "BRAINSCAN_BATCH_SOFT_TIME_LIMIT": "8",
    "BRAINSCAN_BATCH_TIME_LIMIT": "10",
    "BRAINSCAN_VISIBILITY_TIMEOUT": "15",
    "BRAINSCAN_WATCHDOG_INTERVAL": "2",
    "BRAINSCAN_REQUEUE_AFTER": "5",
    "BRAINSCAN_DECODE_THREADS": "2",
}


REDIS_URL = os.environ.get("BRAINSCAN_TEST_REDIS", "redis://127.0.0.1:6379")
POSTGRES_SERVER = os.environ.get("BRAINSCAN_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")


class BackendUnavailable(RuntimeError):
    """Redis or PostgreSQL, which the caller needs, is not reachable."""


def redis_test_url() -> str:
    """A Redis database of this process's own (1..15 by pid), emptied first."""
    url = f"{REDIS_URL.rstrip('/')}/{os.getpid() % 15 + 1}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    except redis.exceptions.ConnectionError as exc:
        raise BackendUnavailable(
            f"Redis is not reachable at {REDIS_URL} (set BRAINSCAN_TEST_REDIS): {exc}"
        ) from exc
    return url


def _postgres_admin_engine() -> Engine:
    return create_engine(
        f"{POSTGRES_SERVER.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool
    )


@contextmanager
def fresh_postgres_database(prefix: str = "brainscan_test") -> Iterator[str]:
    """An empty, uniquely named PostgreSQL database for the duration of the block, then dropped."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = _postgres_admin_engine()
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        raise BackendUnavailable(
            f"PostgreSQL is not reachable at {POSTGRES_SERVER} (set BRAINSCAN_TEST_POSTGRES): {exc}"
        ) from exc
    try:
        yield f"{POSTGRES_SERVER.rstrip('/')}/{name}"
    finally:
        dispose_all()  # connections cached by code under test would keep the database open
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it is true or `timeout` seconds have passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """The environment of one brainscan instance, and its Settings as the processes read them."""

    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    def sessions(self) -> sessionmaker[Session]:
        return get_sessionmaker(self.settings.resolved_database_url)

    def submit(
        self, folder: Path, *, batch_size: int = 256, key: str | None = None, priority: str = "routine"
    ) -> tuple[int, bool]:
        """Create a job for a folder (as the API does) and send it to the planner."""
        from training.card import ModelCard, card_path_for
        from worker.celery_app import celery_for
        from worker.enqueue import submit_job

        card = ModelCard.load(card_path_for(self.settings.model_path))
        job_id, created = self.create_job(
            folder,
            model_version=card.version,
            threshold=card.threshold,
            batch_size=batch_size,
            key=key,
            priority=priority,
        )
        if created:
            submit_job(celery_for(self.settings), job_id)
        return job_id, created

    def create_job(
        self,
        folder: Path,
        *,
        model_version: str,
        threshold: float,
        batch_size: int,
        key: str | None = None,
        site_profiles: bool = False,
        priority: str = "routine",
        return_to: str | None = None,
    ) -> tuple[int, bool]:
        """Record a job for a folder, as the API does, without sending it anywhere: (id, created).
        `site_profiles`: its DICOM series take their site's profile (submitted without a threshold);
        `return_to`: the destinations its study results go to."""
        with self.sessions().begin() as session:
            job, created = create_job(
                session=session,
                source=folder.name,
                source_kind="folder",
                source_path=str(folder),
                submitted_by="test",
                model_version=model_version,
                threshold=threshold,
                batch_size=batch_size,
                idempotency_key=key,
                site_profiles=site_profiles,
                priority=priority,
                return_to=return_to,
            )
            return job.id, created

    def plan(self, job_id: int, *, enqueue: Callable[[list[int]], object]) -> int:
        """Plan the job in this process, as a worker's plan_job does."""
        from brainscan.keys import patient_hash_key
        from worker import planning

        return planning.plan(
            job_id,
            sessions=self.sessions(),
            enqueue=enqueue,
            roots=self.settings.source_roots,
            patient_key=patient_hash_key(self.settings),
        )

    def score(
        self, batch_id: int, *, scorer: Scorer, worker: str, max_attempts: int = 3, lease: float | None = None
    ) -> str:
        """Score the batch in this process, as a worker's score_batch does."""
        from worker import scoring

        return scoring.score(
            batch_id,
            sessions=self.sessions(),
            scorer=scorer,
            worker=worker,
            max_attempts=max_attempts,
            roots=self.settings.source_roots,
            lease=self.settings.batch_lease if lease is None else lease,
        )

    def run_here(self, folder: Path, *, scorer: Scorer, batch_size: int) -> int:
        """A job over `folder` planned and scored in this process, batch after batch; its id."""
        job_id, _ = self.create_job(
            folder, model_version=scorer.version, threshold=scorer.threshold, batch_size=batch_size
        )
        sent: list[int] = []
        self.plan(job_id, enqueue=sent.extend)
        for batch_id in sent:
            self.score(batch_id, scorer=scorer, worker="in-process")
        return job_id

    def job(self, job_id: int) -> Job:
        with self.sessions()() as session:
            job = get_job(session=session, job_id=job_id)
            assert job is not None
            return job

    def wait(
        self,
        job_id: int,
        *,
        timeout: float = 180,
        until: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
    ) -> Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job.status in until:
                return job
            time.sleep(0.25)
        raise TimeoutError(f"job {job_id} still {self.job(job_id).status} after {timeout} s")


class WorkerProcess:
    """`brainscan worker` in its own process group, so a test can SIGKILL all of it at once."""

    def __init__(self, service: Service, *, concurrency: int = 2, log: Path) -> None:
        self.log_path, self.concurrency = log, concurrency
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [BRAINSCAN, "worker", "--concurrency", str(concurrency), "--loglevel", "INFO"],
            env={**os.environ, **service.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        """Until every pool process has loaded the model (the log says so)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if " ready." in text and text.count("loaded model") >= self.concurrency:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{text[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the main process and every pool process: nothing gets to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> float:
        """SIGTERM to the main process only, as `docker stop` and a scale-down send it; the
        seconds until the worker exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


class PrivateRedis:
    """A redis-server of the test's own on a free port, which the test may restart."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        """appendonly: persist every write (AOF, fsync always), so a restart keeps the queues."""
        self.port, self.workdir, self.appendonly = free_port(), workdir, appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for this test"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)


class FlakyProxy:
    """A TCP proxy to a server that can be 'unplugged': open connections cut, new ones refused."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.up = threading.Event()
        self.up.set()
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def unplug(self) -> None:
        self.up.clear()
        with self.lock:
            for s in self.connections:
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.connections.clear()

    def plug(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.unplug()
        self.listener.close()


@contextmanager
def running_worker(service: Service, log: Path, concurrency: int = 2) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(service, concurrency=concurrency, log=log)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def build_folder(shared_data: Path, dest: Path, count: int) -> Path:
    """`count` real labelled images under dest/{yes,no}, hard-linked where possible (fast, no copy)."""
    from training.dataset import discover

    records = [r for r in discover([shared_data]).images if r.label is not None]
    for i in range(count):
        record = records[(i * 7919) % len(records)]  # spread over sources and classes
        target = dest / ("yes" if record.label else "no") / f"{i:05d}{record.path.suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(record.path, target)
        except OSError:
            shutil.copyfile(record.path, target)
    return dest
