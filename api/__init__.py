"""The Flask app factory: settings, database, auth and CSRF, the REST and web blueprints, error pages.

Dependencies: api -> db, worker.enqueue / worker.celery_app (sending work, never task code), and
training.decode and training.thumbnail for previews (rendered in child processes: api.thumbnails).
"""

from __future__ import annotations

import logging
import tempfile
from typing import IO, Any

from flask import Flask, Request, Response, current_app
from werkzeug.exceptions import BadRequest
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from api.context import EXTENSION
from api.errors import ApiError
from brainscan.keys import session_signing_key
from brainscan.settings import Settings, load_settings

MAX_ID = 2**63 - 1  # ids are 64-bit in the database: a larger one is a malformed request, not a 500


class DatabaseId(IntegerConverter):
    """`<int:...>` in every route: a non-negative whole number that fits a database id, else 400."""

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise BadRequest(f"{value} is too large for an id")
        return number


class BrainscanRequest(Request):
    """Uploads to a submission stream straight to disk in the upload folder, not to memory;
    JSON nested too deep for the parser is a 400, not a crash."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        from api.auth import UPLOAD_ENDPOINTS

        if self.endpoint not in UPLOAD_ENDPOINTS:  # other forms are small (SMALL_BODY_BYTES)
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        folder = current_app.extensions[EXTENSION].upload_dir
        folder.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", suffix=".part")  # gone on close

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise ApiError(400, "bad_request", "the JSON body is nested too deeply") from None


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
    if "Cache-Control" not in response.headers:  # pages and results name files, which can name patients
        response.headers["Cache-Control"] = "no-store"
    return response


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app for these settings (default: from BRAINSCAN_* variables); test_config wins."""
    from api import (
        auth,
        errors,
        health,
        openapi,
        rest_jobs,
        rest_models,
        rest_results,
        rest_reviews,
        rest_sites,
        rest_studies,
        review_page,
        views,
    )
    from api.auth import SESSION_LIFETIME, SMALL_BODY_BYTES

    if settings is None:  # `flask --app api run`; the CLI loads settings itself and warns there
        settings = load_settings()
        for line in settings.misspelling_warnings():
            logging.getLogger(__name__).warning(line)
    settings.validate()
    app = Flask(__name__)
    app.request_class = BrainscanRequest
    app.url_map.converters["int"] = DatabaseId
    app.extensions[EXTENSION] = settings
    app.config.from_mapping(
        SECRET_KEY=session_signing_key(settings),
        MAX_CONTENT_LENGTH=SMALL_BODY_BYTES,  # raised to the upload limit for authenticated submissions
        SESSION_COOKIE_NAME="brainscan_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure or settings.env == "production",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        SESSION_REFRESH_EACH_REQUEST=False,  # the cookie ends SESSION_LIFETIME after login, busy or not
        WTF_CSRF_CHECK_DEFAULT=False,  # api.auth checks forms posted with a session cookie
        WTF_CSRF_TIME_LIMIT=None,  # valid for the session's life: a job page stays open all shift
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep id and status first, as documented
    if test_config:
        app.config.update(test_config)
    if settings.proxies:  # the client's address (sign-in throttling, audit) as the proxy saw it
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxies, x_proto=settings.proxies)  # type: ignore[method-assign]
    app.after_request(_security_headers)
    errors.register(app)
    auth.register(app)
    for blueprint in (
        health.bp,
        rest_jobs.bp,
        rest_results.bp,
        rest_studies.bp,
        rest_reviews.bp,
        rest_sites.bp,
        rest_models.bp,
        openapi.bp,
        views.bp,
        review_page.bp,
    ):
        app.register_blueprint(blueprint)
    return app
