"""`brainscan up`: the whole service on one machine, supervised: API + one worker, SQLite + files."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from brainscan.settings import Settings

CREDENTIALS = "first-run-credentials.txt"
LOCK = "up.lock"  # held by the `brainscan up` that serves this data folder
PR_SET_PDEATHSIG = 1


class AlreadyServed(RuntimeError):
    """Another `brainscan up` serves the data folder, or another program holds the port."""


def claim_data_dir(data_dir: Path) -> int:
    """Lock the data folder for this process's life (the lock goes when the process does, however
    it ends); AlreadyServed naming the other `up` when one holds it. The open file descriptor."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyServed(
            f"{data_dir.resolve()} is already served by another brainscan up (process {holder}); "
            "stop it first, or give this one another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def check_port_free(host: str, port: int) -> None:
    """AlreadyServed when something listens on host:port already (checked before anything is
    created, so no banner or password is printed for a server that is not ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the API's server does
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise AlreadyServed(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            raise AlreadyServed(
                f"port {port} on {host} is in use (another brainscan up, or another program); "
                "stop it, or choose another with --port"
            ) from None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the `up` that started it dies, even by SIGKILL, so no
    worker is left behind holding the queue and its memory (Linux; elsewhere a no-op)."""
    name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and name:
        ctypes.CDLL(name, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


RESTART_BACKOFF = (1, 2, 5, 10, 30)  # seconds before restarting a child that died on its own


def brainscan_command() -> list[str]:
    """How to run this same brainscan (the console script beside this interpreter)."""
    script = Path(sys.executable).with_name("brainscan")
    return [str(script)] if script.exists() else [sys.executable, "-m", "brainscan"]


def child_env(settings: Settings) -> dict[str, str]:
    """The environment for child processes: the same settings, made explicit."""
    return {
        **os.environ,
        "BRAINSCAN_DATA_DIR": str(settings.data_dir.resolve()),
        "BRAINSCAN_ARCHIVE_ROOT": str(settings.resolved_archive_root),
        "BRAINSCAN_DATABASE_URL": settings.resolved_database_url,
        "BRAINSCAN_BROKER_URL": settings.resolved_broker_url,
        "BRAINSCAN_MODEL_PATH": str(settings.model_path),
    }


def prepare(settings: Settings) -> list[str]:
    """Folders, database schema and, on the first start, an operator login and an API token.

    Returns lines for the start-up banner.
    """
    from db.engine import get_sessionmaker
    from db.migrate import upgrade
    from db.tokens import create_token, create_user, list_tokens

    for folder in (settings.data_dir, settings.resolved_archive_root, settings.upload_dir):
        folder.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)  # one made by an earlier version may be readable by all
    upgrade(settings.resolved_database_url)
    credentials = (settings.data_dir / CREDENTIALS).resolve()
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        first_start = not list_tokens(session=session)
        if first_start:
            password = secrets.token_urlsafe(16)
            create_user(session=session, username="admin", password=password, scopes="admin")
            token, _ = create_token(session=session, name="brainscan up (first start)", scopes="admin")
    if first_start:
        credentials.write_text(f"web login: admin / {password}\nAPI token (admin): {token}\n")
        credentials.chmod(0o600)
        return [
            f"web login:     admin / {password}",
            f"API token:     {token}",
            f"(both saved in {credentials}, readable only by you)",
        ]
    command = (
        f"BRAINSCAN_DATA_DIR={settings.data_dir.resolve()} {Path(sys.executable).with_name('brainscan')}"
    )
    return [
        f"web login:     admin (password in {credentials};",
        f"               change it: {command} user set-password admin)",
        f"API token:     see the same file, or: {command} token create --scope read --scope submit",
    ]


@dataclass
class Child:
    """A supervised process: restarted with backoff if it dies on its own."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_stop(self) -> None:
        """SIGTERM to the child's main process only, as `docker stop` sends it: a worker hands
        back the batches its pool holds and exits in seconds. (SIGTERM to the whole group would
        kill the pool processes under Celery's main process, which then waits on them.)"""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> None:
        """Until the child exited; SIGKILL to its whole group after `timeout`."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def stop_all(children: list[Child], timeout: float) -> None:
    """Stop the children together: each told at once, each given `timeout` seconds."""
    for child in children:
        child.signal_stop()
    for child in children:
        child.wait_stopped(timeout)


def wait_healthy(url: str, child: Child, timeout: float = 60) -> None:
    """Until GET /healthz answers 200; raise if the API process dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"the API exited during start-up; see {child.log}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the API did not answer on {url} within {timeout:.0f} s; see {child.log}")


def supervise(children: list[Child], stop_requested: list[bool]) -> None:
    """Restart children that die on their own until asked to stop."""
    while not stop_requested[0]:
        for child in children:
            if child.alive() or stop_requested[0]:
                continue
            delay = RESTART_BACKOFF[min(child.restarts, len(RESTART_BACKOFF) - 1)]
            code = child.proc.returncode if child.proc else None
            print(
                f"{child.name} exited (code {code}); restarting in {delay} s (log: {child.log})",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(delay)
            if time.monotonic() - child.started_at > 300:
                child.restarts = 0  # it ran fine for a while: the next failure starts the backoff over
            child.restarts += 1
            child.start()
        time.sleep(0.5)
