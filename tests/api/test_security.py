"""Attacks from the hostile probe of a default install (issue 33), each reproduced against the app.

Every test here failed before its fix: it plays the attacker's request and asserts what a
defended service answers.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import stat
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse as Response

from api import create_app
from api.rest_results import spreadsheet_safe
from api.thumbnails import PreviewPool, ThumbnailError
from brainscan.cli import main
from brainscan.embedded import CREDENTIALS, prepare
from brainscan.settings import Settings, SettingsError
from db.models import AuditEvent, utcnow
from db.tokens import create_token, create_user, set_password
from tests.api.conftest import PASSWORD, bearer, csrf_token, plan_and_score
from tests.conftest import SHIPPED_MODEL
from tests.images import create_random_slice, encoded, save_image, write_deflated_dicom_bomb, write_dicom

OLD_BUILT_IN_KEY = "dev-only-secret-change-me"  # the key every install signed sessions with before


def forged_cookie(key: str, payload: dict[str, object]) -> str:
    """A session cookie signed with `key`, as an attacker who knows that key makes one."""
    forger = Flask("forger")
    forger.secret_key = key
    serializer = SecureCookieSessionInterface().get_signing_serializer(forger)
    assert serializer is not None
    return str(serializer.dumps(payload))


def test_a_session_forged_with_the_old_built_in_key_is_not_accepted(
    api_settings: Settings, operator: str
) -> None:
    default_install = replace(api_settings, secret_key=Settings().secret_key)  # no key configured
    client = create_app(default_install, {"TESTING": True}).test_client()
    client.set_cookie("brainscan_session", forged_cookie(OLD_BUILT_IN_KEY, {"user_id": 1}))
    assert client.get("/api/v1/jobs", headers={"Accept": "application/json"}).status_code == 401
    page = client.get("/jobs")
    assert page.status_code == 302 and "/login" in page.headers["Location"]


def test_a_fresh_install_makes_its_own_session_key_kept_private_and_across_restarts(
    api_settings: Settings,
) -> None:
    assert api_settings.secret_key == ""
    first = create_app(api_settings).secret_key
    key_file = api_settings.secret_key_file
    assert key_file.is_file() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert isinstance(first, str) and len(first) >= 64 and first != OLD_BUILT_IN_KEY
    assert create_app(api_settings).secret_key == first  # a restart keeps web logins valid
    other = Settings(env="test", data_dir=api_settings.data_dir.parent / "other-instance")
    assert create_app(other).secret_key != first  # each install its own


def test_a_readable_key_file_or_a_short_configured_key_stops_the_app(
    api_settings: Settings, tmp_path: Path
) -> None:
    create_app(api_settings)
    api_settings.secret_key_file.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        create_app(api_settings)
    with pytest.raises(SettingsError, match="at least 32 characters"):
        create_app(Settings(env="test", data_dir=tmp_path / "d", secret_key="changeme"))


def vm_peak_reset() -> None:
    """Start this process's peak-resident-memory (VmHWM) count afresh."""
    Path("/proc/self/clear_refs").write_text("5")


def vm_kb(field: str) -> int:
    found = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert found, field
    return int(found.group(1))


def test_thumbnails_of_a_dicom_bomb_cost_the_api_process_no_memory(
    app: Flask, tokens: dict[str, str], job: int, api_settings: Settings
) -> None:
    """Four parallel thumbnail requests with a read token took a gunicorn process to 8.6 GB."""
    client = app.test_client()
    first = client.get(f"/api/v1/jobs/{job}/results", headers=bearer(tokens["read"])).get_json()["results"][0]
    assert api_settings.archive_root is not None
    write_deflated_dicom_bomb(api_settings.archive_root / "ward-1" / first["path"])
    url = f"/api/v1/jobs/{job}/results/{first['id']}/thumbnail"
    before = vm_kb("VmRSS")
    vm_peak_reset()
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda _: app.test_client().get(url, headers=bearer(tokens["read"])), range(4))
        )
    assert [a.status_code for a in answers] == [422] * 4
    assert "possible decompression bomb" in answers[0].get_json()["error"]["message"]
    assert vm_kb("VmHWM") - before < 64 * 1024  # rendering happened in the capped preview processes


def test_a_preview_process_over_its_memory_cap_fails_alone(tmp_path: Path) -> None:
    side = 4096  # the largest 16-bit slice allowed: decoding it needs ~280 MB
    ramp = (np.arange(side * side, dtype=np.uint32) % 65536).astype(np.uint16).reshape(side, side)
    big = save_image(tmp_path / "largest.png", ramp)
    small = save_image(tmp_path / "small.png", create_random_slice(128))
    capped = PreviewPool(processes=1, memory_cap=250 * 1024**2)  # an interpreter with Pillow: ~150 MB
    try:
        with pytest.raises(ThumbnailError, match="memory"):
            capped.render(big, max_pixels=side * side)
        assert capped.render(small, max_pixels=side * side).startswith(b"\x89PNG")  # and it goes on
    finally:
        capped.close()
    assert PreviewPool().render(big, max_pixels=side * side).startswith(b"\x89PNG")  # the default cap fits


def test_thumbnails_are_never_cached(client: FlaskClient, tokens: dict[str, str], job: int) -> None:
    first = client.get(f"/api/v1/jobs/{job}/results?errors=false", headers=bearer(tokens["read"])).get_json()[
        "results"
    ]
    scored = next(r for r in first if r["status"] == "scored")
    response = client.get(
        f"/api/v1/jobs/{job}/results/{scored['id']}/thumbnail", headers=bearer(tokens["read"])
    )
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    for url in (f"/api/v1/jobs/{job}", f"/api/v1/jobs/{job}/results?format=csv"):  # file names, too
        assert client.get(url, headers=bearer(tokens["read"])).headers["Cache-Control"] == "no-store"


# Sessions: logout, password change and disabling end them; they end 12 h after login regardless.


def login(client: FlaskClient, username: str = "alice", **extra: str) -> Response:
    return client.post(
        "/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf_token(client), **extra}
    )


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("brainscan_session")
    assert cookie is not None
    return cookie.value


def test_a_copied_session_cookie_stops_working_at_logout(app: Flask, operator: str) -> None:
    browser, thief = app.test_client(), app.test_client()
    assert login(browser).status_code == 302
    thief.set_cookie("brainscan_session", session_cookie(browser))
    assert thief.get("/jobs").status_code == 200
    browser.post("/logout", data={"csrf_token": csrf_token(browser, "/jobs")})
    assert thief.get("/jobs").status_code == 302


def test_a_password_change_or_disabling_ends_every_session(
    app: Flask, operator: str, sessions: sessionmaker[Session], api_settings: Settings
) -> None:
    client = app.test_client()
    login(client)
    with sessions.begin() as session:
        set_password(session=session, username=operator, password="a new long password")
    assert client.get("/jobs").status_code == 302
    assert (
        client.post(
            "/login",
            data={"username": operator, "password": "a new long password", "csrf_token": csrf_token(client)},
        ).status_code
        == 302
    )
    env = {"BRAINSCAN_DATABASE_URL": api_settings.resolved_database_url, "BRAINSCAN_ENV": "test"}
    result = CliRunner().invoke(main, ["user", "disable", operator], env=env)
    assert result.exit_code == 0, result.output
    assert client.get("/jobs").status_code == 302


def test_a_session_ends_twelve_hours_after_login_however_busy(
    app: Flask, operator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.test_client()
    started = time.time()
    login(client)
    client.get("/jobs")  # the first page adds its CSRF token to the session
    assert "Set-Cookie" not in client.get("/jobs").headers  # requests do not extend the cookie
    client.get("/submit")
    expires = client.get_cookie("brainscan_session").expires  # type: ignore[union-attr]
    assert expires is not None and abs(expires.timestamp() - (started + 12 * 3600)) < 60  # from login
    monkeypatch.setattr(time, "time", lambda: started + 11.9 * 3600)
    assert client.get("/jobs").status_code == 200
    monkeypatch.setattr(time, "time", lambda: started + 12.1 * 3600)
    assert client.get("/jobs").status_code == 302


# Open redirect: only a path on this site.


@pytest.mark.parametrize(
    "target",
    [
        "/\t/evil.example/phish",
        "/%09/evil.example/phish",
        "/\\evil.example",
        "//evil.example",
        "https://evil.example/",
        "/jobs\nSet-Cookie: planted=1",
        "/\r\n/evil.example",
        " //evil.example",
    ],
)
def test_login_never_redirects_off_the_site(client: FlaskClient, operator: str, target: str) -> None:
    response = login(client, next=target)
    assert response.status_code == 302 and response.headers["Location"] == "/jobs", target
    query = client.get(f"/login?next={target}")  # signed in already: redirected at once
    assert query.status_code == 302 and query.headers["Location"] in ("/jobs", target), target
    assert query.headers["Location"] == "/jobs" or (target.isprintable() and "\\" not in target)


def test_the_probes_encoded_tab_in_next_leads_to_the_jobs_page(client: FlaskClient, operator: str) -> None:
    form = client.get("/login?next=/%09/evil.example/phish").get_data(as_text=True)
    assert "evil.example" not in form  # the form does not even carry it
    assert login(client, next="/\t/evil.example/phish").headers["Location"] == "/jobs"


# Idempotency keys: the caller's own, and bound to what was asked.


def submit(client: FlaskClient, token: str, body: dict[str, object], key: str) -> Response:
    return client.post("/api/v1/jobs", json=body, headers={**bearer(token), "Idempotency-Key": key})


def test_another_callers_idempotency_key_neither_finds_nor_blocks_a_job(
    client: FlaskClient, tokens: dict[str, str], other_team: dict[str, str], model: dict[str, object]
) -> None:
    mine = submit(client, tokens["submit"], {"source": "ward-1"}, "nightly-2026-12-03")
    theirs = submit(client, other_team["submit"], {"source": "ward-1", "batch_size": 2}, "nightly-2026-12-03")
    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.get_json()["id"] != theirs.get_json()["id"]
    assert theirs.get_json()["submitted_by"].startswith("token:outsider-submit")
    again = submit(client, tokens["submit"], {"source": "ward-1"}, "nightly-2026-12-03")
    assert again.status_code == 200 and again.get_json()["id"] == mine.get_json()["id"]


def test_a_repeated_key_with_a_different_body_is_refused(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object]
) -> None:
    assert submit(client, tokens["submit"], {"source": "ward-1"}, "k1").status_code == 202
    for body in ({"source": "empty-ward"}, {"source": "ward-1", "threshold": 0.5}):
        refused = submit(client, tokens["submit"], body, "k1")
        assert refused.status_code == 422
        assert refused.get_json()["error"]["code"] == "idempotency_key_reused"
    assert submit(client, tokens["submit"], {"source": "ward-1/"}, "k1").status_code == 200  # same folder


# Owners: another caller's jobs are invisible unless it has the all-jobs scope.


def test_a_token_of_another_team_cannot_read_or_cancel_a_job(
    client: FlaskClient, tokens: dict[str, str], other_team: dict[str, str], job: int
) -> None:
    outsider = bearer(other_team["submit"])
    assert client.get("/api/v1/jobs", headers=outsider).get_json()["jobs"] == []
    for url in (
        f"/api/v1/jobs/{job}",
        f"/api/v1/jobs/{job}/batches",
        f"/api/v1/jobs/{job}/results",
        f"/api/v1/jobs/{job}/results?format=csv",
        f"/api/v1/jobs/{job}/results/1/thumbnail",
    ):
        response = client.get(url, headers=outsider)
        assert response.status_code == 404, url
        assert response.get_json()["error"]["message"].startswith(("there is no job", "job "))
    for action in ("cancel", "rerun"):
        assert client.post(f"/api/v1/jobs/{job}/{action}", headers=outsider).status_code == 404
    overseer = bearer(other_team["all-jobs"])
    assert client.get(f"/api/v1/jobs/{job}", headers=overseer).status_code == 200
    assert [j["id"] for j in client.get("/api/v1/jobs", headers=overseer).get_json()["jobs"]] == [job]


def test_an_operator_sees_their_teams_jobs_only(
    app: Flask, job: int, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        create_user(session=session, username="bob", password=PASSWORD, team="cardiology")
    client = app.test_client()
    assert login(client, "bob").status_code == 302
    assert client.get(f"/jobs/{job}").status_code == 404
    assert f'href="/jobs/{job}"' not in client.get("/jobs").get_data(as_text=True)


# Bodies: small unless an authenticated caller submits.


def test_an_anonymous_big_body_is_refused_before_it_is_read_and_nothing_is_written(
    client: FlaskClient, api_settings: Settings, tokens: dict[str, str]
) -> None:
    big = {"archive": (io.BytesIO(b"\0" * 1_000_000), "x.zip"), "username": "alice", "csrf_token": "x"}
    assert client.post("/login", data=big, content_type="multipart/form-data").status_code == 413
    assert client.post(
        "/submit",
        data=dict(big, archive=(io.BytesIO(b"\0" * 1_000_000), "x.zip")),
        content_type="multipart/form-data",
    ).status_code in (302, 413)
    read_only = client.post(
        "/api/v1/jobs",
        data={"archive": (io.BytesIO(b"\0" * 1_000_000), "x.zip")},
        headers=bearer(tokens["read"]),
        content_type="multipart/form-data",
    )
    assert read_only.status_code == 403
    uploads = api_settings.upload_dir
    assert not uploads.exists() or list(uploads.iterdir()) == []


# Exports: no cell a spreadsheet would run.


def test_csv_export_neutralises_formula_cells(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    assert api_settings.archive_root is not None
    folder = api_settings.archive_root / "exports"
    for name in ('=HYPERLINK("evil.example").png', "+1+2.png", "-3.png", "@SUM(A1).png", "ok.png"):
        save_image(folder / name, create_random_slice(64, seed=len(name)))
    submitted = client.post("/api/v1/jobs", json={"source": "exports"}, headers=bearer(tokens["submit"]))
    plan_and_score(api_settings, submitted.get_json()["id"])
    export = client.get(
        f"/api/v1/jobs/{submitted.get_json()['id']}/results?format=csv", headers=bearer(tokens["read"])
    )
    text = export.get_data(as_text=True)
    paths = [row["path"] for row in csv.DictReader(io.StringIO(text))]
    assert sorted(paths) == sorted(
        ["'+1+2.png", "'-3.png", '\'=HYPERLINK("evil.example").png', "'@SUM(A1).png", "ok.png"]
    )
    assert spreadsheet_safe("\tcmd") == "'\tcmd" and spreadsheet_safe(-0.5) == -0.5


# Low: malformed requests are 400s, not 500s.


def test_an_id_beyond_64_bits_is_a_400(client: FlaskClient, tokens: dict[str, str]) -> None:
    huge = 2**63
    for url in (
        f"/api/v1/jobs/{huge}",
        f"/api/v1/jobs/1/results/{huge}/thumbnail",
        f"/api/v1/jobs?before_id={huge}",
        f"/api/v1/jobs/1/results?after_id={10**30}",
    ):
        response = client.get(url, headers=bearer(tokens["read"]))
        assert response.status_code == 400, url
        assert response.get_json()["error"]["code"] == "bad_request"
    assert client.get(f"/api/v1/jobs/{2**63 - 1}", headers=bearer(tokens["read"])).status_code == 404


def test_json_nested_a_hundred_thousand_deep_is_a_400(client: FlaskClient, tokens: dict[str, str]) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(
        "/api/v1/jobs", data=deep, content_type="application/json", headers=bearer(tokens["submit"])
    )
    assert response.status_code == 400 and "nested too deeply" in response.get_json()["error"]["message"]


def upload_zip(client: FlaskClient, token: str, name: str, members: list[tuple[str, bytes]]) -> Response:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, data in members:
            archive.writestr(member, data)
    return client.post(
        "/api/v1/jobs",
        headers=bearer(token),
        content_type="multipart/form-data",
        data={"archive": (io.BytesIO(buffer.getvalue()), name)},
    )


def test_a_thousand_deep_zip_is_a_400_and_leaves_nothing(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    response = upload_zip(client, tokens["submit"], "deep.zip", [("d/" * 1000 + "slice.png", b"\x89PNG")])
    assert response.status_code == 400
    assert "nested deeper than 32 folders" in response.get_json()["error"]["message"]
    assert list(api_settings.upload_dir.iterdir()) == []


def test_only_images_and_labels_are_extracted_from_an_upload(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    dicom = write_dicom(api_settings.data_dir / "probe.dcm", create_random_slice(64))
    members = [
        ("yes/a.png", encoded(create_random_slice(64), "PNG")),
        ("labels.csv", b"path,label\n"),
        ("run.sh", b"#!/bin/sh"),
        ("notes.txt", b"x"),
        ("IM0001", dicom.read_bytes()),
        ("README", b"plain text, no DICOM preamble"),
    ]
    assert upload_zip(client, tokens["submit"], "mixed.zip", members).status_code == 202
    folder = next(p for p in api_settings.upload_dir.iterdir() if p.is_dir())
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "IM0001",
        "labels.csv",
        "yes/a.png",
    ]


# Low: the archive root is checked again whenever files are read.


def test_a_folder_swapped_for_a_link_after_submission_is_not_read(
    client: FlaskClient, tokens: dict[str, str], job: int, api_settings: Settings
) -> None:
    assert api_settings.archive_root is not None
    ward = api_settings.archive_root / "ward-1"
    first = client.get(f"/api/v1/jobs/{job}/results", headers=bearer(tokens["read"])).get_json()["results"][0]
    outside = api_settings.archive_root.parent / "outside"  # holds secret.png (api conftest)
    shutil.copytree(ward, outside / "ward-1-copy")
    shutil.rmtree(ward)
    ward.symlink_to(outside / "ward-1-copy", target_is_directory=True)  # same files, now outside
    url = f"/api/v1/jobs/{job}/results/{first['id']}/thumbnail"
    assert client.get(url, headers=bearer(tokens["read"])).status_code == 404


# Low: weak or eternal credentials, cookies, file modes.


def test_an_expired_token_is_refused(client: FlaskClient, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        text, row = create_token(session=session, name="old", scopes="read", lifetime=timedelta(days=1))
        row.expires_at = utcnow() - timedelta(seconds=1)
    assert client.get("/api/v1/jobs", headers=bearer(text)).status_code == 401
    with sessions.begin() as session, pytest.raises(ValueError, match="from 1 to 730 days"):
        create_token(session=session, name="forever", scopes="read", lifetime=timedelta(days=3650))


def test_production_forces_secure_cookies(api_settings: Settings, operator: str) -> None:
    app = create_app(replace(api_settings, env="production", session_cookie_secure=False), {"TESTING": True})
    client = app.test_client()
    assert "Secure" in login(client).headers["Set-Cookie"]


def test_a_fresh_data_folder_is_private(tmp_path: Path) -> None:
    env = {"BRAINSCAN_DATA_DIR": str(tmp_path / "data"), "BRAINSCAN_ENV": "test"}
    (tmp_path / "data").mkdir(mode=0o755)
    mask = os.umask(0o022)
    try:
        assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
        settings = Settings(env="test", data_dir=tmp_path / "data", model_path=SHIPPED_MODEL)
        prepare(settings)
        create_app(settings)
    finally:
        os.umask(mask)
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    for made in (settings.sqlite_path, settings.secret_key_file, settings.data_dir / CREDENTIALS):
        assert stat.S_IMODE(made.stat().st_mode) & 0o077 == 0, made


def test_behind_a_proxy_throttling_sees_each_client_and_only_then(
    api_settings: Settings, operator: str, sessions: sessionmaker[Session]
) -> None:
    for proxies, recorded in ((0, "127.0.0.1"), (1, "203.0.113.9")):
        client = create_app(replace(api_settings, proxies=proxies), {"TESTING": True}).test_client()
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        client.post(
            "/login",
            data={"username": operator, "password": "wrong guess", "csrf_token": csrf_token(client)},
            headers=forwarded,
        )
        with sessions() as session:
            last = session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert last is not None and last.client == recorded, proxies
