"""Liveness, readiness against real and unreachable services, and Prometheus metrics of a real job."""

from __future__ import annotations

import re
import time
from pathlib import Path

from flask.testing import FlaskClient

from api import create_app
from brainscan.settings import Settings
from brainscan.testing import free_port, redis_test_url
from tests.api.conftest import bearer, plan_and_score


def reachable_redis() -> str:
    """The test Redis; skips where absent, fails under CI."""
    return redis_test_url()


def test_healthz_answers_without_a_token(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_the_favicon_is_served_without_a_token(client: FlaskClient) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response.location.endswith("/static/favicon.svg")
    icon = client.get(response.location)
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml" and b"<svg" in icon.data


def test_readyz_checks_the_database_and_the_embedded_broker(
    client: FlaskClient, tokens: dict[str, str]
) -> None:
    response = client.get("/readyz", headers=bearer(tokens["read"]))
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_reaches_a_real_redis(api_settings: Settings, tokens: dict[str, str]) -> None:
    app = create_app(api_settings.with_overrides(broker_url=reachable_redis()), {"TESTING": True})
    assert app.test_client().get("/readyz", headers=bearer(tokens["read"])).status_code == 200


def test_readyz_says_503_quickly_when_the_broker_is_down(
    api_settings: Settings, tokens: dict[str, str]
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    client = create_app(api_settings.with_overrides(broker_url=dead), {"TESTING": True}).test_client()
    started = time.monotonic()
    response = client.get("/readyz", headers=bearer(tokens["read"]))
    assert response.status_code == 503 and time.monotonic() - started < 10
    assert response.get_json()["checks"] == {"database": "ok", "broker": "broker unreachable"}
    metrics = client.get("/metrics", headers=bearer(tokens["read"])).get_data(as_text=True)
    assert "brainscan_broker_up 0" in metrics and "brainscan_queue_depth" not in metrics


def test_readyz_says_503_when_the_database_is_gone(api_settings: Settings, tmp_path: Path) -> None:
    from db.engine import get_sessionmaker
    from db.tokens import create_token

    with get_sessionmaker(api_settings.resolved_database_url).begin() as session:
        token = create_token(session=session, name="probe", scopes="read")[0]
    client = create_app(api_settings, {"TESTING": True}).test_client()
    # the token checks out against the real database, then the readiness probe looks at a broken one
    broken = create_app(
        api_settings.with_overrides(database_url=f"sqlite:///{tmp_path / 'nothing.db'}"), {"TESTING": True}
    )
    assert client.get("/readyz", headers=bearer(token)).status_code == 200
    with broken.test_request_context("/readyz"):
        from api.health import _database_error

        assert _database_error() == "database unreachable: OperationalError"


def test_metrics_count_jobs_images_errors_batch_durations_and_queues(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    done = client.post("/api/v1/jobs", json={"source": "ward-1"}, headers=bearer(tokens["submit"])).get_json()
    client.post("/api/v1/jobs", json={"source": "ward-1"}, headers=bearer(tokens["submit"]))
    plan_and_score(api_settings, done["id"], error_every=3)
    response = client.get("/metrics", headers=bearer(tokens["read"]))
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    values = {k: float(v) for k, v in re.findall(r"^(brainscan_\S+) (\S+)$", text, re.MULTILINE)}
    assert values['brainscan_jobs{status="succeeded"}'] == 1
    assert values['brainscan_jobs{status="queued"}'] == 1
    assert values["brainscan_images_scored_total"] == 4 and values["brainscan_image_errors_total"] == 2
    # two batches took 0.5 s and 1.5 s
    assert values['brainscan_batch_duration_seconds_bucket{le="0.5"}'] == 1
    assert values['brainscan_batch_duration_seconds_bucket{le="2"}'] == 2
    assert values['brainscan_batch_duration_seconds_bucket{le="+Inf"}'] == 2
    assert values["brainscan_batch_duration_seconds_sum"] == 2.0
    assert values['brainscan_queue_depth{queue="brainscan.plan"}'] == 2  # no worker took them
    assert "# TYPE brainscan_batch_duration_seconds histogram" in text
