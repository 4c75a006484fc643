"""`brainscan token`, `brainscan user` and `brainscan api` (gunicorn) against a real database."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from brainscan.cli import main
from brainscan.testing import BRAINSCAN, free_port
from db.audit import list_events
from db.tokens import verify_token, verify_user
from tests.conftest import IN_CI, REPO
from tests.images import create_random_slice, encoded


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "BRAINSCAN_DATABASE_URL": db_url,
        "BRAINSCAN_DATA_DIR": str(tmp_path / "data"),
        "BRAINSCAN_ARCHIVE_ROOT": str(tmp_path / "archive"),
        "BRAINSCAN_ENV": "test",
    }


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_token_create_prints_the_token_alone_on_the_last_line(
    env: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    output = run(env, "token", "create", "--scope", "submit", "--scope", "read", "--name", "nightly import")
    token = output.strip().splitlines()[-1]
    assert token.startswith("bs_") and " " not in token
    with sessions.begin() as session:
        row = verify_token(session=session, token=token)
        assert row is not None and row.scopes == "submit,read" and row.name == "nightly import"
        assert row.secret_hash != token and token not in row.secret_hash  # hashed at rest
        assert [e.action for e in list_events(session=session)] == ["token.create"]


def test_tokens_are_listed_and_revoked(env: dict[str, str], sessions: sessionmaker[Session]) -> None:
    assert "no tokens yet" in run(env, "token", "list")
    token = run(env, "token", "create", "--scope", "read").strip().splitlines()[-1]
    listing = run(env, "token", "list")
    assert token[:8] in listing and token not in listing and "read token" in listing
    assert "token 1 revoked" in run(env, "token", "revoke", "1")
    with sessions.begin() as session:
        assert verify_token(session=session, token=token) is None
    again = CliRunner().invoke(main, ["token", "revoke", "1"], env=env)
    assert again.exit_code == 1 and "already revoked" in again.output
    bad_scope = CliRunner().invoke(main, ["token", "create", "--scope", "root"], env=env)
    assert bad_scope.exit_code == 2


def test_users_are_created_and_their_passwords_changed(
    env: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    assert "user bob created" in run(env, "user", "create", "bob", "--password-stdin", stdin="first secret\n")
    typed_twice = "typed it twice\ntyped it twice\n"  # at the prompt, then to confirm it
    assert "created" in run(env, "user", "create", "carol", stdin=typed_twice)
    duplicate = CliRunner().invoke(
        main, ["user", "create", "bob", "--password-stdin"], env=env, input="another password\n"
    )
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    run(env, "user", "set-password", "bob", "--password-stdin", stdin="second secret\n")
    with sessions.begin() as session:
        assert verify_user(session=session, username="bob", password="second secret") is not None
        assert verify_user(session=session, username="bob", password="first secret") is None
        assert verify_user(session=session, username="carol", password="typed it twice") is not None
    missing = CliRunner().invoke(
        main, ["user", "set-password", "dan", "--password-stdin"], env=env, input="long enough password\n"
    )
    assert missing.exit_code == 1 and "no user dan" in missing.output
    for short in ("", "x", "elevenchars"):
        refused = CliRunner().invoke(
            main, ["user", "create", "eve", "--password-stdin"], env=env, input=short + "\n"
        )
        assert refused.exit_code == 1 and "at least 12 characters" in refused.output


def test_users_are_listed_and_the_audit_log_is_read_from_the_command_line(env: dict[str, str]) -> None:
    assert "no users yet" in run(env, "user", "list")
    run(env, "user", "create", "bob", "--password-stdin", "--scope", "read", stdin="first secret here\n")
    run(env, "user", "create", "carol", "--password-stdin", "--team", "ward-2", stdin="second secret here\n")
    run(env, "user", "disable", "carol")
    listing = run(env, "user", "list").splitlines()
    assert listing[0].split() == ["username", "scopes", "team", "created", "state"]
    assert listing[1].startswith("bob") and listing[1].endswith("active") and " read " in listing[1]
    assert listing[2].startswith("carol") and "ward-2" in listing[2] and listing[2].endswith("disabled")
    table = run(env, "audit").splitlines()
    assert [line.split()[4] for line in table[1:]] == ["user.disable", "user.create", "user.create"]
    events = [json.loads(line) for line in run(env, "audit", "--action", "user.", "--json").splitlines()]
    assert [e["action"] for e in events] == ["user.disable", "user.create", "user.create"]
    assert events[0]["detail"] == {"username": "carol"}
    assert run(env, "audit", "--action", "login.failed") == "no events match\n"
    assert len(run(env, "audit", "--limit", "1", "--json").splitlines()) == 1

    kept = CliRunner().invoke(main, ["user", "delete", "carol"], env=env, input="n\n")
    assert kept.exit_code == 1 and "Aborted" in kept.output
    assert "user carol deleted" in run(env, "user", "delete", "carol", stdin="y\n")
    assert [line.split()[0] for line in run(env, "user", "list").splitlines()[1:]] == ["bob"]
    missing = CliRunner().invoke(main, ["user", "delete", "carol", "--yes"], env=env)
    assert missing.exit_code == 1 and "no user carol" in missing.output
    deleted = json.loads(run(env, "audit", "--limit", "1", "--json"))
    assert deleted["action"] == "user.delete" and deleted["detail"] == {"username": "carol"}


def test_changing_the_first_admin_password_strikes_it_from_the_credentials_file(env: dict[str, str]) -> None:
    from brainscan.embedded import CREDENTIALS

    run(env, "user", "create", "admin", "--password-stdin", "--scope", "admin", stdin="first admin secret\n")
    credentials = Path(env["BRAINSCAN_DATA_DIR"]) / CREDENTIALS
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text("web login: admin / first admin secret\nAPI token (admin): bs_x\n")
    run(env, "user", "set-password", "admin", "--password-stdin", stdin="second admin secret\n")
    text = credentials.read_text()
    assert "first admin secret" not in text and "web login: admin (password changed" in text
    assert "API token (admin): bs_x" in text


def test_an_unmigrated_database_gets_a_plain_message(tmp_path: Path) -> None:
    env = {"BRAINSCAN_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}", "BRAINSCAN_ENV": "test"}
    result = CliRunner().invoke(main, ["token", "list"], env=env)
    assert result.exit_code == 1 and "brainscan db upgrade" in result.output


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class LiveApi:
    """`brainscan api` running as a real process: where it listens, a read token, its log."""

    port: int
    token: str
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def live_api(env: dict[str, str], tmp_path: Path) -> Iterator[LiveApi]:
    """`brainscan api --workers 1` on a free port, answering /healthz."""
    token = run(env, "token", "create", "--scope", "read").strip().splitlines()[-1]
    port, log_path = free_port(), tmp_path / "api.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [BRAINSCAN, "api", "--port", str(port), "--workers", "1"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            yield LiveApi(port, token, log_path)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(20)


def test_brainscan_api_serves_the_app_with_gunicorn(live_api: LiveApi) -> None:
    status, body = get(live_api.url("/api/v1/jobs"), live_api.token)
    assert (status, json.loads(body)) == (200, {"jobs": [], "next_before_id": None})
    assert get(live_api.url("/api/v1/jobs"))[0] == 401
    assert "Using worker: asgi" in live_api.log.read_text()


SLOW_SOCKETS = 50


@pytest.mark.slow  # waits out the server's timeouts
def test_fifty_slow_clients_do_not_keep_healthz_from_answering(live_api: LiveApi) -> None:
    """Slowloris: each socket sends one more header line every 2 s and never ends its request."""
    slow = [socket.create_connection(("127.0.0.1", live_api.port)) for _ in range(SLOW_SOCKETS)]
    try:
        for line in range(4):
            for sock in slow:
                sock.sendall(b"X-Slow: %d\r\n" % line if line else b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            assert get(live_api.url("/healthz"))[0] == 200
            assert time.monotonic() - started < 1.0
            time.sleep(2)
        status, _ = get(live_api.url("/api/v1/jobs"), live_api.token)
        assert status == 200
    finally:
        for sock in slow:
            sock.close()


def test_an_upload_streams_through_the_real_server_to_a_job(
    live_api: LiveApi, env: dict[str, str], model: dict[str, object]
) -> None:
    token = run(env, "token", "create", "--scope", "submit", "--scope", "read").strip().splitlines()[-1]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as members:
        for i in range(3):
            members.writestr(f"ward/yes/s{i}.png", encoded(create_random_slice(64, seed=i), "PNG"))
    boundary = "brainscan-test-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="archive"; filename="w.zip"\r\n'
        f"Content-Type: application/zip\r\n\r\n"
    ).encode() + archive.getvalue()
    body += f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        live_api.url("/api/v1/jobs"),
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        job = json.loads(response.read())
        assert response.status == 202
    assert (job["source"], job["source_kind"], job["status"]) == ("w.zip", "upload", "queued")


def test_an_anonymous_request_announcing_a_huge_body_is_answered_413_at_once(live_api: LiveApi) -> None:
    """The login form's CSRF check used to read (and spool to disk) whatever body it was sent."""
    with socket.create_connection(("127.0.0.1", live_api.port), timeout=5) as sock:
        sock.sendall(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 2000000000\r\n\r\n--b\r\n"
        )  # and never the rest
        started = time.monotonic()
        status_line = sock.recv(200).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413 ") and time.monotonic() - started < 2


@pytest.mark.slow  # waits out the server's timeouts
def test_stalled_sign_in_bodies_hold_no_thread_and_are_cut_off(live_api: LiveApi) -> None:
    """Twenty anonymous POSTs that announce a body and never send it: views run in 8 threads."""
    stalled = [socket.create_connection(("127.0.0.1", live_api.port), timeout=15) for _ in range(20)]
    try:
        for sock in stalled:
            sock.sendall(
                b"POST /login HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 100\r\n\r\nusername=a"
            )
        time.sleep(1)
        started = time.monotonic()
        assert get(live_api.url("/api/v1/jobs"), live_api.token)[0] == 200
        assert time.monotonic() - started < 1.0
        answer = stalled[0].recv(200)  # at BODY_DEADLINE_S
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 12
    finally:
        for sock in stalled:
            sock.close()


NGINX = Path("/usr/sbin/nginx")  # Debian's nginx-light; .ci/run installs it


@pytest.fixture
def compose_proxy(live_api: LiveApi, tmp_path: Path) -> Iterator[int]:
    """docker-compose.yml's own `proxy` server block, run by nginx in front of `brainscan api`."""
    if not NGINX.exists():
        message = f"nginx is not installed at {NGINX} (apt-get install nginx-light)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    port, run_dir = free_port(), tmp_path / "nginx"
    run_dir.mkdir()
    server = (
        compose["services"]["proxy"]["environment"]["NGINX_CONF"]
        .replace("$$", "$")
        .replace("proxy_pass http://api:8080;", f"proxy_pass http://127.0.0.1:{live_api.port};")
        .replace("listen 8080;", f"listen 127.0.0.1:{port};")
    )
    temp_paths = " ".join(
        f"{kind}_temp_path {run_dir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (run_dir / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {run_dir}/nginx.pid; error_log {run_dir}/error.log;\n"
        f"events {{ worker_connections 1024; }}\nhttp {{ access_log off; {temp_paths}\n{server}\n}}\n"
    )
    proxy = subprocess.Popen(
        [str(NGINX), "-p", str(run_dir), "-c", str(run_dir / "nginx.conf")], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with suppress(OSError):
                if get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            time.sleep(0.1)
        yield port
    finally:
        proxy.terminate()
        proxy.wait(10)


@pytest.mark.slow  # waits out the server's timeouts
def test_the_compose_proxy_cuts_off_slow_clients_and_passes_the_rest(
    live_api: LiveApi, compose_proxy: int
) -> None:
    base = f"http://127.0.0.1:{compose_proxy}"
    status, body = get(f"{base}/api/v1/jobs", live_api.token)
    assert (status, json.loads(body)["jobs"]) == (200, [])
    slow = [socket.create_connection(("127.0.0.1", compose_proxy), timeout=15) for _ in range(SLOW_SOCKETS)]
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and the rest never
        started = time.monotonic()
        assert get(f"{base}/healthz")[0] == 200 and time.monotonic() - started < 1.0
        assert slow[0].recv(100) == b""  # closed by client_header_timeout (10 s)
        assert 8 < time.monotonic() - started < 14
    finally:
        for sock in slow:
            sock.close()
