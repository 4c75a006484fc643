"""Errors as JSON `{"error": {"code", "message"}}` for the API, as calm HTML pages for the web view.

Nothing here ever shows a stack trace: unexpected exceptions are logged and answered with a
plain 500.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)
JSON_PREFIXES = ("/api/", "/healthz", "/readyz", "/metrics")


class ApiError(Exception):
    """A refusal with an HTTP status, a machine-readable code and a plain message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def wants_json() -> bool:
    """Whether this request should get JSON errors (API paths, or a client that asks for JSON)."""
    if request.path.startswith(JSON_PREFIXES):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The error as JSON or as an HTML page, whichever the request wants."""
    if wants_json():
        response = jsonify({"error": {"code": code, "message": message}})
    else:
        html = render_template("error.html", status=status, code=code, message=message)
        response = Response(html, mimetype="text/html")
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _http_code(exc: HTTPException) -> str:
    if isinstance(exc, CSRFError):
        return "csrf_failed"
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def _on_api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _on_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.description or exc.name
    if isinstance(exc, RequestEntityTooLarge):
        from api.context import settings

        message = f"the upload is larger than the limit of {settings().max_upload_bytes:,} bytes"
    if isinstance(exc, CSRFError):
        message = f"the form's security token is missing or expired ({exc.description}); reload the page"
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}  # Allow, for 405
    return error_response(status, _http_code(exc), message, headers)


def _on_unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _on_http_error(exc)
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "something went wrong on the server; it has been logged")


def register(app: Flask) -> None:
    """Install the handlers on the app."""
    app.register_error_handler(ApiError, _on_api_error)
    app.register_error_handler(HTTPException, _on_http_error)
    app.register_error_handler(Exception, _on_unexpected)
