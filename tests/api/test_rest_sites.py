"""Site profiles over REST: set by an admin, applied to the site's new jobs, versioned, reversible."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from db.audit import list_events
from tests.api.conftest import bearer


def _submit(client: FlaskClient, tokens: dict[str, str], **extra: object) -> dict[str, object]:
    response = client.post(
        "/api/v1/jobs", json={"source": "ward-1", **extra}, headers=bearer(tokens["submit"])
    )
    assert response.status_code == 202, response.get_json()
    job: dict[str, object] = response.get_json()
    return job


def test_a_site_profile_sets_its_jobs_threshold_until_it_is_retired(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], sessions: sessionmaker[Session]
) -> None:
    url = "/api/v1/sites/ward-1/profiles"
    assert client.post(url, json={"threshold": 0.4}, headers=bearer(tokens["submit"])).status_code == 403
    assert client.post(url, json={"threshold": 1.5}, headers=bearer(tokens["admin"])).status_code == 400
    first = client.post(url, json={"threshold": 0.4}, headers=bearer(tokens["admin"])).get_json()
    second = client.post(url, json={"threshold": 0.35}, headers=bearer(tokens["admin"])).get_json()
    assert _submit(client, tokens)["threshold"] == 0.35  # the version in force
    assert _submit(client, tokens, threshold=0.9)["threshold"] == 0.9  # a job's own still wins
    history = client.get(url, headers=bearer(tokens["read"])).get_json()["profiles"]
    assert [(p["id"], p["active"]) for p in history] == [(second["id"], True), (first["id"], False)]
    retired = client.delete(url, headers=bearer(tokens["admin"])).get_json()
    assert retired["id"] == second["id"] and retired["retired_at"] is not None
    assert _submit(client, tokens)["threshold"] == model["threshold"]  # the model's again
    assert client.delete(url, headers=bearer(tokens["admin"])).status_code == 404
    with sessions() as session:
        changes = [e.detail for e in list_events(session=session) if e.action == "site.profile"]
    assert changes == [
        {"site": "ward-1", "threshold": None},
        {"site": "ward-1", "threshold": 0.35},
        {"site": "ward-1", "threshold": 0.4},
    ]


def test_no_threshold_is_suggested_from_too_few_reviews(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object]
) -> None:
    body = client.get("/api/v1/sites/ward-1/suggestion", headers=bearer(tokens["read"])).get_json()
    assert body["threshold"] is None and "at least 20" in body["reason"]
    refused = client.post(
        "/api/v1/sites/ward-1/profiles", json={"recall": 0.95}, headers=bearer(tokens["admin"])
    )
    assert refused.status_code == 409
