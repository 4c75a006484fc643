"""Who may do what: tokens on every route, scopes, revocation, operator logins, session cookies, CSRF."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from api import create_app
from brainscan.cli import main
from brainscan.settings import Settings
from db.audit import list_events
from db.models import ApiToken, AuditEvent, User, utcnow
from db.tokens import revoke_token
from tests.api.conftest import PASSWORD, bearer, csrf_token

PUBLIC = {"/healthz", "/favicon.ico", "/login", "/static/<path:filename>"}  # the icon: a redirect to static
SAMPLE = {
    "job_id": "1",
    "result_id": "1",
    "version": "v1",
    "name": "roc",
    "filename": "brainscan.css",
    "site": "ward-1",
}


def every_route(app: Flask) -> list[tuple[str, str, str]]:
    """(method, url, rule) for every route and method the app serves."""
    routes = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: SAMPLE[m.group(1)], rule.rule)
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        routes += [(method, url, rule.rule) for method in methods]
    return routes


def test_every_route_but_healthz_and_login_needs_a_token_or_a_login(app: Flask, client: FlaskClient) -> None:
    guarded = [route for route in every_route(app) if route[2] not in PUBLIC]
    assert len(guarded) >= 20
    for method, url, _ in guarded:
        response = client.open(url, method=method)
        if url.startswith(("/api/", "/readyz", "/metrics")):
            assert response.status_code == 401, (method, url)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.get_json()["error"]["code"] == "unauthorized"
        elif method == "GET":
            assert response.status_code == 302 and "/login?next=" in response.headers["Location"], url
        else:  # a form post without a session: refused before it could do anything
            assert response.status_code in (302, 400), (method, url)
    assert client.get("/healthz").status_code == 200


def test_an_unknown_or_malformed_token_is_refused(client: FlaskClient, tokens: dict[str, str]) -> None:
    for header in ("Bearer bs_not-a-real-token", "Bearer ", f"Basic {tokens['read']}", tokens["read"]):
        response = client.get("/api/v1/jobs", headers={"Authorization": header})
        assert response.status_code == 401, header


def test_a_revoked_token_stops_working_at_once(
    client: FlaskClient, tokens: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    assert client.get("/api/v1/jobs", headers=bearer(tokens["read"])).status_code == 200
    with sessions.begin() as session:
        assert revoke_token(session=session, token_id=1)
    response = client.get("/api/v1/jobs", headers=bearer(tokens["read"]))
    assert response.status_code == 401 and "revoked" in response.get_json()["error"]["message"]


def test_token_use_is_noted_at_most_once_a_minute(
    client: FlaskClient, tokens: dict[str, str], sessions: sessionmaker[Session]
) -> None:
    def last_used() -> object:
        with sessions() as session:
            return session.scalar(select(ApiToken.last_used_at).where(ApiToken.name == "read-bot"))

    assert last_used() is None
    assert client.get("/api/v1/jobs", headers=bearer(tokens["read"])).status_code == 200
    first = last_used()
    assert first is not None
    assert client.get("/api/v1/jobs", headers=bearer(tokens["read"])).status_code == 200
    assert last_used() == first  # polling does not write on every request
    with sessions.begin() as session:
        session.execute(update(ApiToken).values(last_used_at=utcnow() - timedelta(minutes=2)))
    assert client.get("/api/v1/jobs", headers=bearer(tokens["read"])).status_code == 200
    assert last_used() > first  # type: ignore[operator]


@pytest.mark.parametrize(
    ("scope", "read", "write"), [("read", 200, 403), ("submit", 403, 202), ("admin", 200, 202)]
)
def test_read_scope_reads_submit_scope_writes_admin_does_both(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], scope: str, read: int, write: int
) -> None:
    assert client.get("/api/v1/jobs", headers=bearer(tokens[scope])).status_code == read
    response = client.post("/api/v1/jobs", json={"source": "ward-1"}, headers=bearer(tokens[scope]))
    assert response.status_code == write
    if write == 403:
        assert response.get_json()["error"]["message"] == (
            "this needs the 'submit' scope, which the token does not have"
        )
    assert client.get("/metrics", headers=bearer(tokens[scope])).status_code == read


def test_a_token_needs_no_csrf_token(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object]
) -> None:
    response = client.post("/api/v1/jobs", json={"source": "ward-1"}, headers=bearer(tokens["submit"]))
    assert response.status_code == 202


def test_an_operator_logs_in_with_a_safe_session_cookie_and_it_is_audited(
    client: FlaskClient, operator: str, sessions: sessionmaker[Session]
) -> None:
    response = client.post(
        "/login",
        data={"username": operator, "password": PASSWORD, "csrf_token": csrf_token(client), "next": "/model"},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/model"
    cookie = response.headers["Set-Cookie"]
    assert "brainscan_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # settings.session_cookie_secure is off in this test
    assert client.get("/jobs").status_code == 200
    assert client.get("/api/v1/jobs").status_code == 200  # the page's live polling uses the session
    with sessions() as session:
        assert [(e.action, e.actor) for e in list_events(session=session)] == [("login", "user:alice")]


def test_the_session_cookie_is_secure_when_the_settings_say_so(api_settings: Settings, operator: str) -> None:
    app = create_app(api_settings.with_overrides(session_cookie_secure=True), {"TESTING": True})
    client = app.test_client()
    response = client.post(
        "/login", data={"username": operator, "password": PASSWORD, "csrf_token": csrf_token(client)}
    )
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong_and_audited(
    client: FlaskClient, operator: str, sessions: sessionmaker[Session]
) -> None:
    for username, password in ((operator, "wrong"), ("mallory", PASSWORD)):
        response = client.post(
            "/login", data={"username": username, "password": password, "csrf_token": csrf_token(client)}
        )
        assert response.status_code == 401
        assert "Unknown username or wrong password." in response.get_data(as_text=True)
    assert client.get("/jobs").status_code == 302
    with sessions() as session:
        events = [(e.action, e.actor) for e in list_events(session=session)]
    assert events == [("login.failed", "user:mallory"), ("login.failed", "user:alice")]


def test_failed_sign_ins_hold_back_their_address_not_the_account(
    client: FlaskClient, operator: str, sessions: sessionmaker[Session], api_settings: Settings
) -> None:
    """Anyone could lock `admin` out by failing five times; now only the guessing address waits."""

    def attempt(password: str, address: str = "203.0.113.7") -> TestResponse:
        return client.post(
            "/login",
            data={"username": operator, "password": password, "csrf_token": csrf_token(client)},
            environ_base={"REMOTE_ADDR": address},
        )

    assert [attempt(f"guess-{i}").status_code for i in range(5)] == [401] * 5
    held = attempt(PASSWORD)  # even the right password waits: the address is guessing
    assert held.status_code == 429 and int(held.headers["Retry-After"]) in range(25, 32)
    assert "Too many failed sign-ins from this address" in held.get_data(as_text=True)
    assert attempt(PASSWORD, address="198.51.100.2").status_code == 302  # the operator, elsewhere
    client.post("/logout", data={"csrf_token": csrf_token(client, "/jobs")})
    with sessions.begin() as session:  # 30 s on, one more guess fails and the wait doubles
        for event in session.scalars(select(AuditEvent)):
            event.at -= timedelta(seconds=31)
    assert attempt("guess-5").status_code == 401
    assert 55 <= int(attempt(PASSWORD).headers["Retry-After"]) <= 61
    env = {"BRAINSCAN_DATABASE_URL": api_settings.resolved_database_url, "BRAINSCAN_ENV": "test"}
    unblocked = CliRunner().invoke(main, ["user", "unblock", "203.0.113.7"], env=env)
    assert unblocked.exit_code == 0, unblocked.output
    assert attempt(PASSWORD).status_code == 302
    with sessions() as session:
        clients = {e.client for e in list_events(session=session) if e.action == "login.failed"}
    assert clients == {"203.0.113.7"}


def test_login_only_redirects_within_the_site(client: FlaskClient, operator: str) -> None:
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        response = client.post(
            "/login",
            data={
                "username": operator,
                "password": PASSWORD,
                "next": target,
                "csrf_token": csrf_token(client),
            },
        )
        assert response.headers["Location"] == "/jobs", target
        client.post("/logout", data={"csrf_token": csrf_token(client, "/jobs")})


def test_logging_out_ends_the_session(web: FlaskClient) -> None:
    response = web.post("/logout", data={"csrf_token": csrf_token(web, "/jobs")})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert web.get("/jobs").status_code == 302


def test_a_disabled_operator_is_signed_out(web: FlaskClient, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(update(User).values(disabled=True))
    assert web.get("/jobs").status_code == 302


def test_a_session_that_ended_is_told_so_at_the_login_page(
    web: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    """A password changed elsewhere ends the session: the next page asks for a login and says why;
    a plain visit to the login page says nothing of the kind."""
    with sessions.begin() as session:
        session.execute(update(User).values(session_generation=User.session_generation + 1))
    response = web.get("/jobs")
    assert response.status_code == 302 and "ended=1" in response.headers["Location"]
    page = web.get(response.headers["Location"]).get_data(as_text=True)
    assert "data-session-ended" in page and "Your session has ended" in page
    assert "data-session-ended" not in web.get("/login").get_data(as_text=True)


def test_forms_posted_without_the_csrf_token_are_refused(
    web: FlaskClient, model: dict[str, object], tokens: dict[str, str]
) -> None:
    for url, data in (
        ("/submit", {"source": "ward-1"}),
        ("/logout", {}),
        ("/jobs/1/cancel", {}),
        ("/submit", {"source": "ward-1", "csrf_token": "forged"}),
    ):
        response = web.post(url, data=data)
        assert response.status_code == 400, url
        assert "security token" in response.get_data(as_text=True)
    assert web.get("/jobs").status_code == 200  # still logged in: nothing was done


def test_the_api_called_with_a_session_cookie_needs_the_csrf_header(
    web: FlaskClient, model: dict[str, object]
) -> None:
    refused = web.post("/api/v1/jobs", json={"source": "ward-1"})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "csrf_failed"
    header = {"X-CSRFToken": csrf_token(web, "/jobs")}
    accepted = web.post("/api/v1/jobs", json={"source": "ward-1"}, headers=header)
    assert accepted.status_code == 202 and accepted.get_json()["submitted_by"] == "user:alice"


def test_the_login_form_itself_needs_the_csrf_token(client: FlaskClient, operator: str) -> None:
    response = client.post("/login", data={"username": operator, "password": PASSWORD})
    assert response.status_code == 400
