"""Run real brainscan services for tests and benchmarks: worker processes, a private Redis, a fresh
PostgreSQL database, a breakable TCP proxy, folders of real images.

Both tests/ and bench/ import it, so it does not use pytest: a backend that is not reachable raises
BackendUnavailable, which tests/conftest.py turns into a skip (a failure under CI=true).
Redis comes from BRAINSCAN_TEST_REDIS (default redis://127.0.0.1:6379), PostgreSQL from
BRAINSCAN_TEST_POSTGRES (a server URL without a database name, default
postgresql+psycopg://postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        from worker import planning, pull

        return planning.plan(
            job_id,
            sessions=self.sessions(),
            enqueue=enqueue,
            roots=self.settings.source_roots,
            patient_key=patient_hash_key(self.settings),
            fetch=lambda pull_, folder: pull.retrieve(pull_, folder, settings=self.settings),
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


class Up:
    """A `brainscan up` process (its own process group; BRAINSCAN_* from `env` only) and what its
    banner told us."""

    def __init__(
        self, data_dir: Path, archive_root: Path, port: int, env: dict[str, str] | None = None
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [
                BRAINSCAN,
                "up",
                "--data-dir",
                str(data_dir),
                "--archive-root",
                str(archive_root),
                "--port",
                str(port),
                "--concurrency",
                "2",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("BRAINSCAN_")} | (env or {}),
        )
        self.banner = self._read_banner()

    def _read_banner(self, timeout: float = 120) -> str:
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                return "".join(lines)
        raise AssertionError("brainscan up did not start:\n" + "".join(lines))

    def request(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read())

    def children(self) -> list[int]:
        """The API and worker processes `up` started."""
        text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in text.split()]

    def stop(self) -> tuple[int, str]:
        """Ctrl-C in the terminal: SIGINT to the whole process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        out, _ = self.proc.communicate(timeout=120)
        return self.proc.returncode, out

    def terminate(self) -> float:
        """SIGTERM to `up` alone, as a service manager sends it; seconds until it exited."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=120)
        return time.monotonic() - started


ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class Orthanc:
    """A running Orthanc: `url` (REST), `dicomweb` (its DICOMweb root), `dicom_port`, AE ORTHANC."""

    def __init__(self, http_port: int, dicom_port: int) -> None:
        self.url = f"http://127.0.0.1:{http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.dicom_port = dicom_port

    def request(self, method: str, path: str, body: bytes | None = None, accept: str = "") -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if accept:
            request.add_header("Accept", accept)
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    def json(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        return json.loads(self.request(method, path, data) or b"null")

    def upload(self, files: list[Path]) -> str:
        """Store files in Orthanc (REST); the Orthanc id of their study."""
        study = ""
        for path in files:
            study = self.json("POST", "/instances", path.read_bytes())["ParentStudy"]
        return study

    def send_study(self, modality: str, study_id: str) -> None:
        """Orthanc C-STOREs the study to `modality` (as a PACS routes a study)."""
        self.json("POST", f"/modalities/{modality}/store", {"Resources": [study_id], "Synchronous": True})

    def qido(self, path: str) -> list[dict[str, Any]]:
        """QIDO-RS: what the query under the DICOMweb root finds, as DICOM JSON."""
        answer = self.request("GET", f"/dicom-web/{path}", accept="application/dicom+json")
        return list(json.loads(answer or b"[]"))

    def find_instances(self, study_uid: str, modality: str, series_number: int) -> list[tuple[str, str]]:
        """(series UID, SOP Instance UID) of the study's instances in its series of `modality`
        numbered `series_number`, found by QIDO-RS (series, then their instances)."""
        found = []
        for series in self.qido(f"studies/{study_uid}/series?Modality={modality}"):
            if series.get("00200011", {}).get("Value") != [series_number]:
                continue
            series_uid = series["0020000E"]["Value"][0]
            for instance in self.qido(f"studies/{study_uid}/series/{series_uid}/instances"):
                found.append((series_uid, instance["00080018"]["Value"][0]))
        return found

    def retrieve(self, sop_uid: str) -> Any:
        """The instance as stored, a pydicom Dataset (Orthanc's REST API, found by its SOP Instance
        UID)."""
        import pydicom

        found = self.json("POST", "/tools/lookup", sop_uid.encode())
        (instance,) = [f for f in found if f["Type"] == "Instance"]
        return pydicom.dcmread(io.BytesIO(self.request("GET", f"/instances/{instance['ID']}/file")))


@contextmanager
def running_orthanc(folder: Path, *, modalities: dict[str, tuple[str, int]]) -> Iterator[Orthanc]:
    """Orthanc on 127.0.0.1 with its storage in `folder`; `modalities`: name -> (AE title, port)
    of the DICOM nodes it may send to (all on 127.0.0.1)."""
    if not (Path(ORTHANC).exists() and DICOMWEB_PLUGIN.exists()):
        raise BackendUnavailable("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "brainscan-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {name: [ae, "127.0.0.1", port] for name, (ae, port) in modalities.items()},
        "DicomAlwaysAllowStore": True,
        "StableAge": 1,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT)
    orthanc = Orthanc(http_port, dicom_port)

    def up() -> bool:
        try:
            orthanc.json("GET", "/system")
            return True
        except OSError:
            return False

    try:
        assert wait_for(up, 30), f"Orthanc did not start:\n{log.read_text(errors='replace')[-3000:]}"
        yield orthanc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


class StoreSCP:
    """A DICOM node on loopback (pynetdicom, in this process) that keeps what it is sent: a PACS
    stand-in where Orthanc is more than a test needs. `shutdown()` stops it."""

    def __init__(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.received: list[Any] = []  # pydicom Datasets
        self.port = free_port()
        ae = AE(ae_title="STORESCP")
        ae.supported_contexts = AllStoragePresentationContexts

        def keep(event: Any) -> int:
            self.received.append(event.dataset)
            return 0x0000

        server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, keep)]
        )
        assert server is not None  # block=False returns the running server
        self.server = server

    def shutdown(self) -> None:
        self.server.shutdown()
