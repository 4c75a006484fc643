"""The job routes, on SQLite and on PostgreSQL: submit, idempotency, list, read, batches, cancel, re-run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from db.audit import list_events
from db.models import Job, utcnow
from tests.api.conftest import bearer, plan_and_score
from worker.celery_app import PLAN_QUEUE, SCORE_QUEUE, celery_for
from worker.enqueue import queue_depth


@pytest.fixture
def db_url(database_url: str) -> str:
    """These tests run on both dialects."""
    return database_url


def submit(client: FlaskClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", json=body, headers=bearer(token))
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    job: dict[str, Any] = response.get_json()
    return job


def test_a_submitted_folder_becomes_a_queued_job_sent_to_the_planner_and_audited(
    client: FlaskClient,
    tokens: dict[str, str],
    model: dict[str, object],
    api_settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    response = client.post("/api/v1/jobs", json={"source": "ward-1"}, headers=bearer(tokens["submit"]))
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == job["url"] and job["url"].endswith(f"/api/v1/jobs/{job['id']}")
    assert job["status"] == "queued" and job["source"] == "ward-1" and job["source_kind"] == "folder"
    assert job["model_version"] == model["version"] and job["threshold"] == model["threshold"]
    assert job["batch_size"] == api_settings.batch_size and job["confusion"] is None
    assert job["submitted_by"] == "token:submit-bot#2"
    assert queue_depth(celery_for(api_settings), PLAN_QUEUE) == 1
    with sessions() as session:
        [event] = list_events(session=session, job_id=job["id"])
    assert (event.action, event.actor) == ("job.submit", "token:submit-bot#2")
    assert event.detail is not None and event.detail["source"] == "ward-1"


def test_threshold_and_batch_size_can_be_chosen_and_are_checked(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object]
) -> None:
    job = submit(client, tokens["submit"], {"source": "ward-1", "threshold": 0.3, "batch_size": 2})
    assert (job["threshold"], job["batch_size"]) == (0.3, 2)
    for bad in (
        {"threshold": 1.5},
        {"threshold": "high"},
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"batch_size": True},
    ):
        response = client.post(
            "/api/v1/jobs", json={"source": "ward-1", **bad}, headers=bearer(tokens["submit"])
        )
        assert response.status_code == 400, bad
        assert response.get_json()["error"]["code"] == "bad_request"


def test_the_settings_threshold_overrides_the_models(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    from api import create_app

    app = create_app(api_settings.with_overrides(threshold=0.42), {"TESTING": True})
    job = submit(app.test_client(), tokens["submit"], {"source": "ward-1"})
    assert job["threshold"] == 0.42


def test_a_repeated_idempotency_key_returns_the_same_job_once(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    first = client.post(
        "/api/v1/jobs",
        json={"source": "ward-1"},
        headers={**bearer(tokens["submit"]), "Idempotency-Key": "nightly-2026-11-27"},
    )
    again = client.post(
        "/api/v1/jobs",
        json={"source": "ward-1"},
        headers={**bearer(tokens["submit"]), "Idempotency-Key": "nightly-2026-11-27"},
    )
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.get_json()["id"] == again.get_json()["id"]
    assert queue_depth(celery_for(api_settings), PLAN_QUEUE) == 1  # sent to the planner once


def test_no_registered_model_refuses_submission_with_a_plain_503(
    client: FlaskClient, tokens: dict[str, str]
) -> None:
    response = client.post("/api/v1/jobs", json={"source": "ward-1"}, headers=bearer(tokens["submit"]))
    assert response.status_code == 503
    assert response.get_json()["error"] == {
        "code": "no_model",
        "message": "no worker has registered a model yet: start a worker (brainscan worker) and try again",
    }


def test_a_finished_job_reports_counts_matrix_progress_speed_and_timings(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    job_id = submit(client, tokens["submit"], {"source": "ward-1"})["id"]
    plan_and_score(api_settings, job_id)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(tokens["read"])).get_json()
    assert job["status"] == "succeeded" and job["total"] == 6 and job["scored"] == 6 and job["failed"] == 0
    assert job["skipped"] == 1  # notes.txt
    assert job["skipped_reasons"] == {"not an image file (by its name)": 1}
    assert job["drift"]["status"] == "unknown"  # too few images to call a shift
    matrix = job["confusion"]
    assert sum(matrix.values()) == 6 and matrix["tp"] + matrix["fn"] == 3  # three slices under yes/
    assert job["flagged"] == matrix["tp"] + matrix["fp"]
    assert job["progress"] == 1.0 and job["eta_seconds"] is None and job["images_per_second"] > 0
    assert job["recall"] == (matrix["tp"] / 3 if matrix["tp"] + matrix["fn"] else None)
    assert job["started_at"] and job["finished_at"] and job["seconds"] >= 0
    assert job["batches"] == {"total": 2, "done": 2, "failed": 0}


def test_a_running_job_reports_partial_progress_and_an_eta(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    job_id = submit(client, tokens["submit"], {"source": "ward-1"})["id"]
    plan_and_score(api_settings, job_id, finish=False)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(tokens["read"])).get_json()
    assert job["status"] == "running" and job["scored"] == 4 and job["remaining"] == 2
    assert job["progress"] == pytest.approx(4 / 6)
    assert job["images_per_second"] > 0 and job["eta_seconds"] > 0


def test_batches_are_listed_in_order_with_their_matrices(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    job_id = submit(client, tokens["submit"], {"source": "ward-1"})["id"]
    plan_and_score(api_settings, job_id)
    body = client.get(f"/api/v1/jobs/{job_id}/batches", headers=bearer(tokens["read"])).get_json()
    batches = body["batches"]
    assert [b["index"] for b in batches] == [0, 1] and [b["size"] for b in batches] == [4, 2]
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(tokens["read"])).get_json()
    for cell in ("tp", "fp", "tn", "fn"):
        assert sum(b["confusion"][cell] for b in batches if b["confusion"]) == job["confusion"][cell]
    assert client.get("/api/v1/jobs/999/batches", headers=bearer(tokens["read"])).status_code == 404


def test_jobs_are_listed_newest_first_filtered_and_paged(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    ids = [submit(client, tokens["submit"], {"source": "ward-1"})["id"] for _ in range(3)]
    plan_and_score(api_settings, ids[0])
    read = bearer(tokens["read"])
    page = client.get("/api/v1/jobs?limit=2", headers=read).get_json()
    assert [j["id"] for j in page["jobs"]] == ids[:0:-1] and page["next_before_id"] == ids[1]
    rest = client.get(f"/api/v1/jobs?limit=2&before_id={page['next_before_id']}", headers=read).get_json()
    assert [j["id"] for j in rest["jobs"]] == [ids[0]] and rest["next_before_id"] is None
    done = client.get("/api/v1/jobs?status=succeeded", headers=read).get_json()
    assert [j["id"] for j in done["jobs"]] == [ids[0]]
    for bad in ("status=finished", "limit=0", "limit=501", "before_id=x"):
        assert client.get(f"/api/v1/jobs?{bad}", headers=read).status_code == 400, bad


def test_cancelling_stops_an_unfinished_job_once_and_is_audited(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], sessions: sessionmaker[Session]
) -> None:
    job_id = submit(client, tokens["submit"], {"source": "ward-1"})["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(tokens["admin"]))
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    again = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(tokens["admin"]))
    assert again.status_code == 409 and "already finished" in again.get_json()["error"]["message"]
    assert client.post("/api/v1/jobs/999/cancel", headers=bearer(tokens["admin"])).status_code == 404
    with sessions() as session:
        actions = [(e.action, e.actor) for e in list_events(session=session, job_id=job_id)]
    assert ("job.cancel", "token:admin-bot#3") in actions


def test_rerunning_sends_failed_images_back_to_the_workers_and_is_audited(
    client: FlaskClient,
    tokens: dict[str, str],
    model: dict[str, object],
    api_settings: Settings,
    sessions: sessionmaker[Session],
) -> None:
    job_id = submit(client, tokens["submit"], {"source": "ward-1"})["id"]
    running = client.post(f"/api/v1/jobs/{job_id}/rerun", headers=bearer(tokens["submit"]))
    assert running.status_code == 409  # not finished yet
    plan_and_score(api_settings, job_id, error_every=3)
    before = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(tokens["read"])).get_json()
    assert before["failed"] > 0 and before["status"] == "succeeded"
    assert before["failed_permanently"] == 0 and before["rerun_at"] is None
    with sessions.begin() as session:  # submitted an hour ago: the re-run's elapsed time starts afresh
        session.execute(update(Job).values(created_at=utcnow() - timedelta(hours=1)))
    response = client.post(f"/api/v1/jobs/{job_id}/rerun", headers=bearer(tokens["submit"]))
    rerun = response.get_json()
    assert response.status_code == 202 and rerun["status"] == "running"
    assert rerun["rerun_at"] is not None and rerun["started_at"] is None and rerun["seconds"] < 60
    assert queue_depth(celery_for(api_settings), SCORE_QUEUE) >= 1
    with sessions() as session:
        assert "job.rerun" in [e.action for e in list_events(session=session, job_id=job_id)]


def test_images_that_are_no_slice_are_not_rerun_and_the_refusal_says_why(
    web: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    job_id = submit(web, tokens["submit"], {"source": "ward-1"})["id"]
    plan_and_score(api_settings, job_id, error_every=3, permanent=True)
    job = web.get(f"/api/v1/jobs/{job_id}", headers=bearer(tokens["read"])).get_json()
    assert job["failed"] == job["failed_permanently"] == 2
    response = web.post(f"/api/v1/jobs/{job_id}/rerun", headers=bearer(tokens["submit"]))
    assert response.status_code == 409
    assert "its 2 failed images are no usable slice" in response.get_json()["error"]["message"]
    html = web.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "Re-run failed images</button>" not in html
    assert "does not try them" in html and 'data-note="permanent"' in html


def test_a_missing_job_is_a_json_404(client: FlaskClient, tokens: dict[str, str]) -> None:
    response = client.get("/api/v1/jobs/424242", headers=bearer(tokens["read"]))
    assert response.status_code == 404
    assert response.get_json() == {"error": {"code": "not_found", "message": "there is no job 424242"}}
