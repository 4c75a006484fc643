"""The Flask app factory: settings, database, auth and CSRF, the REST and web blueprints, error pages.

Dependencies: api -> db, worker.enqueue / worker.celery_app (sending work, never task code), and
training.decode and training.thumbnail for previews (rendered in child processes: api.thumbnails).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta
from typing import IO, Any

from flask import Flask, Request, Response, current_app

from api.context import EXTENSION
from api.signing_key import session_signing_key
from brainscan.settings import Settings, load_settings

SESSION_HOURS = 12  # one working shift; operators log in again the next day


class UploadRequest(Request):
    """A request whose uploaded files stream straight to disk in the upload folder, not to memory."""

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        folder = current_app.extensions[EXTENSION].upload_dir
        folder.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", suffix=".part")  # gone on close


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # pages load their own CSS, script and images only: nothing inline, nothing from elsewhere
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
}


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app for these settings (default: from BRAINSCAN_* variables); test_config wins."""
    from api import auth, errors, health, openapi, rest_jobs, rest_models, rest_results, views

    if settings is None:  # `flask --app api run`; the CLI loads settings itself and warns there
        settings = load_settings()
        for line in settings.misspelling_warnings():
            logging.getLogger(__name__).warning(line)
    settings.validate()
    app = Flask(__name__)
    app.request_class = UploadRequest
    app.extensions[EXTENSION] = settings
    app.config.from_mapping(
        SECRET_KEY=session_signing_key(settings),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        SESSION_COOKIE_NAME="brainscan_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        WTF_CSRF_CHECK_DEFAULT=False,  # api.auth checks forms posted with a session cookie
        WTF_CSRF_TIME_LIMIT=None,  # valid for the session's life: a job page stays open all shift
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep id and status first, as documented
    if test_config:
        app.config.update(test_config)
    app.after_request(_security_headers)
    errors.register(app)
    auth.register(app)
    for blueprint in (health.bp, rest_jobs.bp, rest_results.bp, rest_models.bp, openapi.bp, views.bp):
        app.register_blueprint(blueprint)
    return app
