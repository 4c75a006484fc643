"""The app on a real migrated database (SQLite by default; `db_url` is overridden for both dialects),
a real archive root of synthetic MRI-like slices (both from tests/appfixtures.py), real tokens and
operator logins.

Jobs are moved along by the worker's own planner (worker.planning.plan) and db functions; scores
come from a seeded random generator instead of the CNN, whose 20 s load would dwarf these tests
(tests/browser runs the real worker and model).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from brainscan.settings import Settings
from db.batches import claim_batch, finish_batch, list_batches
from db.engine import get_sessionmaker
from db.progress import finish_job_if_complete
from db.results import ScoredImage, pending_images, record_results
from db.tokens import create_token, create_user

PASSWORD = "correct horse battery staple"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def app(api_settings: Settings) -> Flask:
    """The app, CSRF on (as in production)."""
    return create_app(api_settings, {"TESTING": True})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


TEAM = "neuroradiology"  # the fixtures' tokens and operator share it, so they see each other's jobs


@pytest.fixture
def tokens(sessions: sessionmaker[Session]) -> dict[str, str]:
    """One live token per scope, all of one team: {"read": ..., "submit": ..., "review": ..., ...}."""
    with sessions.begin() as session:
        return {
            scope: create_token(session=session, name=f"{scope}-bot", scopes=scope, team=TEAM)[0]
            for scope in ("read", "submit", "admin", "review")
        }


@pytest.fixture
def other_team(sessions: sessionmaker[Session]) -> dict[str, str]:
    """Tokens of another team: one that submits and reads, one that reads every job (all-jobs)."""
    with sessions.begin() as session:
        return {
            "submit": create_token(
                session=session, name="outsider-submit", scopes="submit,read", team="cardiology"
            )[0],
            "all-jobs": create_token(
                session=session, name="oversight", scopes="read,all-jobs", team="cardiology"
            )[0],
        }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token a page's form carries."""
    found = CSRF_FIELD.search(client.get(path).get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


@pytest.fixture
def operator(sessions: sessionmaker[Session]) -> str:
    """An operator account; returns its username."""
    with sessions.begin() as session:
        create_user(session=session, username="alice", password=PASSWORD, team=TEAM)
    return "alice"


@pytest.fixture
def web(client: FlaskClient, operator: str) -> Iterator[FlaskClient]:
    """A client logged in through the login form."""
    response = client.post(
        "/login", data={"username": operator, "password": PASSWORD, "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    yield client


@pytest.fixture
def job(client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings) -> int:
    """A finished job of six labelled images, two of which could not be read."""
    response = client.post("/api/v1/jobs", json={"source": "ward-1"}, headers=bearer(tokens["submit"]))
    job_id: int = response.get_json()["id"]
    plan_and_score(api_settings, job_id, seed=3, error_every=3)
    return job_id


def plan_and_score(
    settings: Settings,
    job_id: int,
    *,
    seed: int = 0,
    error_every: int = 0,
    finish: bool = True,
    permanent: bool = False,
) -> None:
    """Plan the job with the worker's planner, then score every batch with seeded random scores;
    every `error_every`-th image fails instead (`permanent`: as bytes that are no slice do)."""
    from brainscan.keys import patient_hash_key
    from worker.planning import plan

    maker = get_sessionmaker(settings.resolved_database_url)
    roots, key = settings.source_roots, patient_hash_key(settings)
    plan(job_id, sessions=maker, enqueue=lambda batch_ids: None, roots=roots, patient_key=key)
    rng = random.Random(seed)
    with maker() as session:
        batch_ids = [b.id for b in list_batches(session=session, job_id=job_id)]
    for count, batch_id in enumerate(batch_ids if finish else batch_ids[:1]):
        with maker.begin() as session:
            claim_batch(session=session, batch_id=batch_id, worker=f"test:1:task-{batch_id}")
            results = []
            for n, image in enumerate(pending_images(session=session, batch_id=batch_id)):
                if error_every and (count * 100 + n) % error_every == 0:
                    error = "not a recognised image format" if permanent else "cannot read file: I/O error"
                    results.append(
                        ScoredImage(image.relpath, None, None, error, None, image.frame, permanent)
                    )
                else:
                    p = rng.random()
                    results.append(ScoredImage(image.relpath, p, p >= 0.5, frame=image.frame))
            record_results(session=session, job_id=job_id, batch_id=batch_id, results=results)
            finish_batch(session=session, batch_id=batch_id, seconds=0.5 + count)
        with maker.begin() as session:
            finish_job_if_complete(session=session, job_id=job_id)
