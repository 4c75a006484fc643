"""Webhooks of jobs that ended: written with the end (an outbox), POSTed signed to a receiver on
127.0.0.1, tried again after a failure, given up after the last try, and nothing without a URL."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from brainscan.settings import Settings
from brainscan.testing import Service
from db.jobs import cancel_job, create_job, fail_job
from db.models import utcnow
from db.notifications import job_notifications
from db.outbox import retry_in
from worker.notify import MAX_ATTEMPTS, deliver_due

SECRET = "a webhook secret of some length"


class Receiver(ThreadingHTTPServer):
    answers: list[int]
    received: list[tuple[dict[str, str], bytes]]


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        self.send_response(self.server.answers.pop(0) if self.server.answers else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.answers, server.received = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _job(service: Service) -> int:
    with service.sessions().begin() as session:
        job, _ = create_job(
            session=session,
            source="ward-9/patient-name-folder",
            source_kind="folder",
            source_path="/archive/ward-9/patient-name-folder",
            submitted_by="test",
            model_version="m",
            threshold=0.5,
            batch_size=4,
        )
        return job.id


def _settings(service: Service, receiver: Receiver) -> Settings:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    return dataclasses.replace(service.settings, webhook_url=url, webhook_secret=SECRET)


def test_a_job_s_end_is_posted_signed_and_tried_again_after_a_failure(
    embedded: Service, receiver: Receiver
) -> None:
    settings, sessions = _settings(embedded, receiver), embedded.sessions()
    job_id = _job(embedded)
    with sessions.begin() as session:
        assert cancel_job(session=session, job_id=job_id)
    receiver.answers = [503]
    assert deliver_due(sessions=sessions, settings=settings) == 0  # the receiver was down
    assert deliver_due(sessions=sessions, settings=settings) == 0  # not due again for 30 s
    assert deliver_due(sessions=sessions, settings=settings, now=utcnow() + timedelta(seconds=31)) == 1
    assert len(receiver.received) == 2
    headers, body = receiver.received[-1]
    stamp = headers["X-Brainscan-Timestamp"]
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-Brainscan-Signature"] == f"sha256={expected}"
    assert headers["X-Brainscan-Event"] == "job.cancelled"
    sent = json.loads(body)
    assert (
        sent["event"] == "job.cancelled"
        and sent["job"]["id"] == job_id
        and sent["job"]["status"] == "cancelled"
    )
    assert "patient-name-folder" not in body.decode()  # the source folder's name is not sent
    with sessions() as session:
        (state,) = job_notifications(session=session, job_id=job_id)
        assert state.attempts == 2 and state.delivered_at is not None and state.last_error is None
    assert deliver_due(sessions=sessions, settings=settings, now=utcnow() + timedelta(hours=1)) == 0  # once


def test_an_unreachable_receiver_is_given_up_after_the_last_try(
    embedded: Service, receiver: Receiver
) -> None:
    settings, sessions = _settings(embedded, receiver), embedded.sessions()
    job_id = _job(embedded)
    with sessions.begin() as session:
        assert fail_job(session=session, job_id=job_id, error="source folder not found")
    receiver.answers = [500] * MAX_ATTEMPTS
    now = utcnow()
    for _ in range(MAX_ATTEMPTS):
        deliver_due(sessions=sessions, settings=settings, now=now)
        now += timedelta(hours=2)
    with sessions() as session:
        (state,) = job_notifications(session=session, job_id=job_id)
    assert state.attempts == MAX_ATTEMPTS and state.gave_up_at is not None and state.last_error == "HTTP 500"
    assert [retry_in(n, max_attempts=MAX_ATTEMPTS) for n in (1, 2, 3)] == [
        timedelta(seconds=30),
        timedelta(minutes=1),
        timedelta(minutes=2),
    ]
    assert retry_in(MAX_ATTEMPTS, max_attempts=MAX_ATTEMPTS) is None


def test_without_a_url_nothing_is_sent_and_the_end_is_still_recorded(
    embedded: Service, receiver: Receiver
) -> None:
    job_id = _job(embedded)
    with embedded.sessions().begin() as session:
        cancel_job(session=session, job_id=job_id)
    assert (
        deliver_due(sessions=embedded.sessions(), settings=embedded.settings) == 0 and receiver.received == []
    )
    with embedded.sessions()() as session:
        assert [n.event for n in job_notifications(session=session, job_id=job_id)] == ["job.cancelled"]
