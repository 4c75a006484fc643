"""Who is asking: an API token (Bearer, scoped) or an operator's web session; login, logout, CSRF.

One rule for every route, applied before any view runs: all but PUBLIC_ENDPOINTS need a live
token or a logged-in operator; reading (GET, HEAD) needs the `read` scope, anything else `submit`;
`admin` grants every scope. Which jobs a caller sees: `current_viewer` (db.jobs.Viewer). Forms posted with
a session cookie must carry the CSRF token; requests with a Bearer token are exempt (a browser
never adds that header on its own, so they cannot be forged).

Bodies: every request may send at most SMALL_BODY_BYTES, except a submission by a caller with the
`submit` scope, whose limit is raised to the upload limit only after it was authenticated.

A web session carries its user's session generation and its login time: logout, a password
change or disabling the user bumps the generation, and SESSION_LIFETIME after login it ends
whatever the user does meanwhile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

from api.context import sessions, settings
from api.errors import ApiError, wants_json
from db.audit import recent_events, record_event
from db.jobs import Viewer
from db.models import User
from db.tokens import (
    end_sessions,
    granted_scopes,
    last_use_is_stale,
    note_token_used,
    verify_token,
    verify_user,
)

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()

PUBLIC_ENDPOINTS = frozenset({"health.healthz", "health.favicon", "auth.login", "static"})
UPLOAD_ENDPOINTS = frozenset({"jobs.submit_job_route", "views.submit_page"})  # api.asgi streams these
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REVIEW_ENDPOINTS = frozenset(
    {"reviews.record_review_route", "review.review_image"}
)  # writes that need `review`, not `submit`
ADMIN_ENDPOINTS = frozenset(
    {"sites.set_profile_route", "sites.clear_profile_route", "views.audit"}
)  # reads and writes needing `admin`
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="brainscan"'}
SMALL_BODY_BYTES = 64 * 1024  # a login form, a JSON submission or a button: far below this
SESSION_LIFETIME = timedelta(hours=12)  # from login: one working shift, then sign in again
THROTTLE_AFTER = 5  # failed sign-ins from one address within THROTTLE_WINDOW before it must wait
THROTTLE_WINDOW = timedelta(minutes=15)
FIRST_WAIT, LONGEST_WAIT = timedelta(seconds=30), timedelta(minutes=15)  # doubling in between


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: who they are for the audit log, what they may do, and how they proved it."""

    actor: str  # "user:alice" or "token:nightly-import#3": also the owner of the jobs it submits
    scopes: frozenset[str]
    via: str  # "token" or "session"
    team: str | None = None  # jobs of the same team are shared


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer ...` header, or None when there is none."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def current_principal() -> Principal | None:
    """The authenticated caller of this request, or None."""
    if "principal" not in g:
        token = bearer_token()
        if token is not None:
            g.principal = _from_token(token)
        elif "user_id" in session:
            g.principal = _from_session()
        else:
            g.principal = None
    found: Principal | None = g.principal
    return found


def current_viewer() -> Viewer | None:
    """Whose jobs this caller may see and act on; None: every job (the all-jobs scope)."""
    principal = current_principal()
    if principal is None:
        raise ApiError(401, "unauthorized", "this needs an API token or a web login")
    return None if "all-jobs" in principal.scopes else Viewer(principal.actor, principal.team)


def current_actor() -> str:
    """Who to name in the audit log for this request."""
    principal = current_principal()
    return principal.actor if principal is not None else "anonymous"


def _from_token(text: str) -> Principal | None:
    # a read; the write that notes the token's use happens at most once a minute per token, so a
    # script polling the API does not take SQLite's write lock on every request
    with sessions(read_only=True)() as db_session:
        token = verify_token(session=db_session, token=text, note_use=False)
        if token is None:
            return None
        principal = Principal(
            f"token:{token.name}#{token.id}", granted_scopes(token.scopes), "token", token.team
        )
        token_id, stale = token.id, last_use_is_stale(token)
    if stale:
        with sessions().begin() as db_session:
            note_token_used(session=db_session, token_id=token_id)
    return principal


def _from_session() -> Principal | None:
    try:
        user_id, generation, login_at = int(session["user_id"]), int(session["gen"]), float(session["at"])
    except (KeyError, TypeError, ValueError):  # a cookie from before generations, or a malformed one
        session.clear()
        return None
    with sessions(read_only=True)() as db_session:
        user = db_session.get(User, user_id)
        expired = time.time() - login_at > SESSION_LIFETIME.total_seconds()
        if user is None or user.disabled or user.session_generation != generation or expired:
            session.clear()
            g.session_ended = True  # the login page says why it is asked for again
            return None
        return Principal(f"user:{user.username}", granted_scopes(user.scopes), "session", user.team)


def _authorise() -> Response | None:
    """Before every request: authenticate, check the scope the method needs, then CSRF for forms."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        if request.method not in READ_METHODS and request.endpoint is not None:
            csrf.protect()
        return None
    principal = current_principal()
    if principal is None:
        if wants_json():
            message = (
                "the API token is unknown or revoked"
                if bearer_token() is not None
                else "this needs an API token (Authorization: Bearer ...) or a web login"
            )
            raise ApiError(401, "unauthorized", message, BEARER_CHALLENGE)
        back = request.full_path.rstrip("?")
        if g.get("session_ended"):
            return redirect(url_for("auth.login", next=back, ended="1"))
        return redirect(url_for("auth.login", next=back))
    scope = "read" if request.method in READ_METHODS else "submit"
    if scope == "submit" and request.endpoint in REVIEW_ENDPOINTS:
        scope = "review"
    if request.endpoint in ADMIN_ENDPOINTS:
        scope = "admin"
    if scope not in principal.scopes:
        raise ApiError(403, "forbidden", f"this needs the '{scope}' scope, which the token does not have")
    if request.endpoint in UPLOAD_ENDPOINTS and request.method == "POST":
        request.max_content_length = settings().max_upload_bytes  # authenticated: now it may upload
    if request.method not in READ_METHODS and principal.via == "session":
        csrf.protect()
    return None


def _safe_next(target: str | None) -> str:
    """Only a path on this site. Browsers drop tabs and newlines and read a backslash as a slash,
    so '/\\t/evil.example' would become '//evil.example': any control character, whitespace,
    backslash or percent sign (an encoded one of those), or a second leading slash sends the user
    to the jobs page instead. brainscan's own pages need none of them."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and target.isprintable()
        and not any(c.isspace() or c in "\\%" for c in target)
    ):
        return target
    return url_for("views.jobs")


def _client_address() -> str:
    """The client's address as the audit log keeps it (a proxy's X-Forwarded-For: BRAINSCAN_PROXIES)."""
    return (request.remote_addr or "unknown")[:64]


def _wait_before_next_try(db_session: Any, client: str) -> timedelta | None:
    """How long this address must wait before it may try to sign in again, or None.

    After THROTTLE_AFTER failures within THROTTLE_WINDOW (counted since an administrator last
    unblocked the address), each further try waits FIRST_WAIT, doubling up to LONGEST_WAIT, after
    the last failure. Per address, not per account: nobody can lock another user out by name.
    """
    now = datetime.now(UTC)
    _, unblocked = recent_events(
        session=db_session, client=client, action="login.unblock", since=now - THROTTLE_WINDOW
    )
    since = max(now - THROTTLE_WINDOW, unblocked) if unblocked else now - THROTTLE_WINDOW
    failures, last = recent_events(session=db_session, client=client, action="login.failed", since=since)
    if failures < THROTTLE_AFTER or last is None:
        return None
    wait = min(FIRST_WAIT * 2 ** (failures - THROTTLE_AFTER), LONGEST_WAIT)
    remaining = last + wait - now
    return remaining if remaining > timedelta(0) else None


SESSION_ENDED = (
    "Your session has ended: sessions last 12 hours from sign-in, and end when you sign out, your "
    "password is changed or your login is disabled. Sign in again to go on."
)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int, dict[str, str]] | tuple[str, int] | str:
    """The operator login form; a success starts a fresh session, every attempt is audited."""
    if request.method == "GET":
        if current_principal() is not None:
            return redirect(_safe_next(request.args.get("next")))
        ended = SESSION_ENDED if request.args.get("ended") else None
        return render_template("login.html", next=_safe_next(request.args.get("next")), notice=ended)
    username = request.form.get("username", "").strip()[:255]
    password = request.form.get("password", "")
    next_page = _safe_next(request.form.get("next"))
    client = _client_address()
    with sessions().begin() as db_session:
        wait = _wait_before_next_try(db_session, client)
        if wait is not None:
            seconds = int(wait.total_seconds()) + 1
            page = render_template(
                "login.html",
                username=username,
                next=next_page,
                error=f"Too many failed sign-ins from this address: try again in "
                f"{seconds} s, or ask an administrator to unblock it.",
            )
            return page, 429, {"Retry-After": str(seconds)}
        user = verify_user(session=db_session, username=username, password=password) if username else None
        record_event(
            session=db_session,
            actor=f"user:{username}",
            action="login" if user else "login.failed",
            client=client,
        )
        signed_in = (user.id, user.session_generation) if user is not None else None
    if signed_in is None:
        page = render_template(
            "login.html", error="Unknown username or wrong password.", username=username, next=next_page
        )
        return page, 401
    session.clear()  # a new session on login: no fixation of one planted before
    session["user_id"], session["gen"], session["at"] = *signed_in, time.time()
    session.permanent = True
    return redirect(next_page)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """End the operator's sessions: this cookie, and any copy of it or other session of theirs."""
    principal = current_principal()
    if principal is not None and principal.via == "session":
        with sessions().begin() as db_session:
            end_sessions(session=db_session, user_id=int(session["user_id"]))
            record_event(session=db_session, actor=principal.actor, action="logout", client=_client_address())
    session.clear()
    return redirect(url_for("auth.login"))


class LoginBoundSessions(SecureCookieSessionInterface):
    """Session cookies that expire SESSION_LIFETIME after login, however often they are re-sent."""

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime | None:
        login_at = session.get("at")
        if not session.permanent or not isinstance(login_at, float | int):
            return super().get_expiration_time(app, session)
        return datetime.fromtimestamp(login_at, UTC) + SESSION_LIFETIME


def register(app: Flask) -> None:
    """CSRF protection (checked by _authorise, not on every view), the guard, and the blueprint."""
    app.session_interface = LoginBoundSessions()
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    csrf.init_app(app)
    app.before_request(_authorise)
    app.register_blueprint(bp)
