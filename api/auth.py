"""Who is asking: an API token (Bearer, scoped) or an operator's web session; login, logout, CSRF.

One rule for every route, applied before any view runs: all but PUBLIC_ENDPOINTS need a live
token or a logged-in operator; reading (GET, HEAD) needs the `read` scope, anything else `submit`;
`admin` grants both. Forms posted with a session cookie must carry the CSRF token; requests with a
Bearer token are exempt (a browser never adds that header on its own, so they cannot be forged).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

from api.context import sessions
from api.errors import ApiError, wants_json
from db.audit import count_events, record_event
from db.models import User
from db.tokens import SCOPES, last_use_is_stale, note_token_used, token_has_scope, verify_token, verify_user

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()

PUBLIC_ENDPOINTS = frozenset({"health.healthz", "auth.login", "static"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPERATOR_SCOPES = frozenset({"read", "submit"})  # what a logged-in operator may do in the web view
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="brainscan"'}
MAX_FAILED_LOGINS = 5  # per account within LOCKOUT: guessing a password takes years, not minutes
LOCKOUT = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: who they are for the audit log, what they may do, and how they proved it."""

    actor: str  # "user:alice" or "token:nightly-import#3"
    scopes: frozenset[str]
    via: str  # "token" or "session"


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
            g.principal = _from_session(int(session["user_id"]))
        else:
            g.principal = None
    found: Principal | None = g.principal
    return found


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
        scopes = frozenset(scope for scope in SCOPES if token_has_scope(token, scope))
        principal = Principal(f"token:{token.name}#{token.id}", scopes, "token")
        token_id, stale = token.id, last_use_is_stale(token)
    if stale:
        with sessions().begin() as db_session:
            note_token_used(session=db_session, token_id=token_id)
    return principal


def _from_session(user_id: int) -> Principal | None:
    with sessions(read_only=True)() as db_session:
        user = db_session.get(User, user_id)
        if user is None or user.disabled:
            session.clear()
            return None
        return Principal(f"user:{user.username}", OPERATOR_SCOPES, "session")


def _authorise() -> Response | None:
    """Before every request: authenticate, check the scope the method needs, then CSRF for forms."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        if request.method not in READ_METHODS and request.endpoint is not None:
            csrf.protect()
        return None
    principal = current_principal()
    if principal is None:
        if wants_json():
            message = ("the API token is unknown or revoked" if bearer_token() is not None
                       else "this needs an API token (Authorization: Bearer ...) or a web login")
            raise ApiError(401, "unauthorized", message, BEARER_CHALLENGE)
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    scope = "read" if request.method in READ_METHODS else "submit"
    if scope not in principal.scopes:
        raise ApiError(403, "forbidden", f"this needs the '{scope}' scope, which the token does not have")
    if request.method not in READ_METHODS and principal.via == "session":
        csrf.protect()
    return None


def _safe_next(target: str | None) -> str:
    # only a path on this site: never "//host" or an absolute URL (an open redirect)
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return url_for("views.jobs")


def _locked_out(db_session: Any, username: str) -> bool:
    """Five failed sign-ins within 15 minutes lock the account for the rest of that window."""
    since = datetime.now(UTC) - LOCKOUT
    failures = count_events(session=db_session, actor=f"user:{username}", action="login.failed", since=since)
    return failures >= MAX_FAILED_LOGINS


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    """The operator login form; a success starts a fresh session, every attempt is audited."""
    if request.method == "GET":
        if current_principal() is not None:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html", next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()[:255]
    password = request.form.get("password", "")
    with sessions().begin() as db_session:
        if _locked_out(db_session, username):
            page = render_template("login.html", username=username, next=request.form.get("next", ""),
                                   error=f"Too many failed sign-ins for this account: try again in "
                                         f"{LOCKOUT.seconds // 60} minutes, or ask an administrator.")
            return page, 429
        user = verify_user(session=db_session, username=username, password=password) if username else None
        record_event(session=db_session, actor=f"user:{username}", action="login" if user else "login.failed",
                     detail={"remote_addr": request.remote_addr})
        user_id = user.id if user is not None else None
    if user_id is None:
        page = render_template("login.html", error="Unknown username or wrong password.",
                               username=username, next=request.form.get("next", ""))
        return page, 401
    session.clear()  # a new session on login: no fixation of one planted before
    session["user_id"] = user_id
    session.permanent = True
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """End the operator's session."""
    session.clear()
    return redirect(url_for("auth.login"))


def register(app: Flask) -> None:
    """CSRF protection (checked by _authorise, not on every view), the guard, and the blueprint."""
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    csrf.init_app(app)
    app.before_request(_authorise)
    app.register_blueprint(bp)
