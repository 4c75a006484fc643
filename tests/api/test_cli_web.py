"""`brainscan token`, `brainscan user` and `brainscan api` (gunicorn) against a real database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from brainscan.cli import main
from db.audit import list_events
from db.tokens import verify_token, verify_user
from tests.service import BRAINSCAN, free_port


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {"BRAINSCAN_DATABASE_URL": db_url, "BRAINSCAN_DATA_DIR": str(tmp_path / "data"),
            "BRAINSCAN_ARCHIVE_ROOT": str(tmp_path / "archive"), "BRAINSCAN_ENV": "test"}


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_token_create_prints_the_token_alone_on_the_last_line(
        env: dict[str, str], sessions: sessionmaker[Session]) -> None:
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
        env: dict[str, str], sessions: sessionmaker[Session]) -> None:
    assert "user bob created" in run(env, "user", "create", "bob", "--password-stdin", stdin="first secret\n")
    assert "created" in run(env, "user", "create", "carol", stdin="typed\ntyped\n")  # prompted twice
    duplicate = CliRunner().invoke(main, ["user", "create", "bob", "--password-stdin"], env=env, input="x\n")
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    run(env, "user", "set-password", "bob", "--password-stdin", stdin="second secret\n")
    with sessions.begin() as session:
        assert verify_user(session=session, username="bob", password="second secret") is not None
        assert verify_user(session=session, username="bob", password="first secret") is None
        assert verify_user(session=session, username="carol", password="typed") is not None
    missing = CliRunner().invoke(main, ["user", "set-password", "dan", "--password-stdin"], env=env,
                                 input="x\n")
    assert missing.exit_code == 1 and "no user dan" in missing.output
    empty = CliRunner().invoke(main, ["user", "create", "eve", "--password-stdin"], env=env, input="\n")
    assert empty.exit_code == 1 and "must not be empty" in empty.output


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


def test_brainscan_api_serves_the_app_with_gunicorn(env: dict[str, str], tmp_path: Path) -> None:
    token = run(env, "token", "create", "--scope", "read").strip().splitlines()[-1]
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    server = subprocess.Popen([BRAINSCAN, "api", "--port", str(port), "--workers", "1"],
                              env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        status, body = get(f"http://127.0.0.1:{port}/api/v1/jobs", token)
        assert (status, json.loads(body)) == (200, {"jobs": [], "next_before_id": None})
        assert get(f"http://127.0.0.1:{port}/api/v1/jobs")[0] == 401
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)
        log.close()
    assert "gthread" in (tmp_path / "api.log").read_text()
