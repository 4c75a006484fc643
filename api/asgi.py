"""The API as gunicorn's asyncio worker serves it: Flask through a2wsgi, small bodies read first.

a2wsgi runs each request in one of a few threads, and a view that reads the body blocks its
thread until the body has arrived: ten anonymous sign-in posts that never send their announced
bytes would hold every thread. So every request but a submission has its body (at most
SMALL_BODY_BYTES) read whole in the event loop, within BODY_DEADLINE_S, before a thread is
given to it. Submissions stream, since they may be gigabytes: Flask authenticates them before it
reads a byte, so only a caller with the submit scope can hold a thread with a slow upload.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from a2wsgi import WSGIMiddleware
from flask import Flask

from api.auth import SMALL_BODY_BYTES, UPLOAD_ENDPOINTS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY_DEADLINE_S = 10.0  # a small body that takes longer than this is a slow client, not a slow network


class BodyTooSlow(Exception):
    """The client did not send its small body within BODY_DEADLINE_S."""


class BufferSmallBodies:
    """ASGI middleware: read a non-submission body whole, then hand the request on."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, streamed: frozenset[str]
    ) -> None:
        self.app, self.streamed = app, streamed  # paths whose POST bodies stream (submissions)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"] == "POST" and scope["path"] in self.streamed):
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > SMALL_BODY_BYTES:
            await self.app(scope, receive, send)  # Flask answers 413 from the header, reading nothing
            return
        try:
            body = await asyncio.wait_for(_read_body(receive), BODY_DEADLINE_S)
        except (TimeoutError, BodyTooSlow):
            await _refuse(
                send, 408, "request_timeout", f"the request body did not arrive within {BODY_DEADLINE_S:g} s"
            )
            return
        if len(body) > SMALL_BODY_BYTES:
            await _refuse(
                send, 413, "request_entity_too_large", f"the body is larger than {SMALL_BODY_BYTES:,} bytes"
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # disconnect notices
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyTooSlow
        body += message.get("body", b"")
        if len(body) > SMALL_BODY_BYTES or not message.get("more_body", False):
            return bytes(body)


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    payload = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"connection", b"close"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def asgi_app(app: Flask, *, threads: int) -> BufferSmallBodies:
    """The Flask app as an ASGI application running views in `threads` threads; the submission
    routes (api.auth.UPLOAD_ENDPOINTS) are found in its URL map."""
    streamed = frozenset(rule.rule for rule in app.url_map.iter_rules() if rule.endpoint in UPLOAD_ENDPOINTS)
    return BufferSmallBodies(WSGIMiddleware(app, workers=threads), streamed=streamed)  # type: ignore[arg-type]
