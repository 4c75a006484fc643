"""Site profiles over REST: set by an admin, applied to the site's new jobs, versioned, reversible."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from urllib.parse import quote

import pydicom
import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from db.audit import list_events
from tests.api.conftest import bearer, plan_and_score
from tests.conftest import load_bench


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


@pytest.mark.data
def test_a_dicom_job_s_series_take_their_site_s_profile_in_the_job_and_its_csv(
    client: FlaskClient,
    web: FlaskClient,
    tokens: dict[str, str],
    model: dict[str, object],
    api_settings: Settings,
    lgg_flair: Path,
) -> None:
    archive = api_settings.source_roots[0] / "pacs"
    load_bench("dicom_archive").build_archive(lgg_flair, archive, patients=1, seed=0)
    first = pydicom.dcmread(sorted(archive.rglob("IM*"))[0])
    site = f"{first.Manufacturer} / {first.StationName}"
    url = f"/api/v1/sites/{quote(site, safe='')}/profiles"
    profile = client.post(url, json={"threshold": 0.3}, headers=bearer(tokens["admin"])).get_json()
    job_id = client.post(
        "/api/v1/jobs", json={"source": "pacs"}, headers=bearer(tokens["submit"])
    ).get_json()["id"]
    plan_and_score(api_settings, job_id, seed=2)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(tokens["read"])).get_json()
    assert job["threshold"] == model["threshold"]  # the job's: its top folder has no profile
    assert job["site_thresholds"] == [{"site": site, "threshold": 0.3, "profile": profile["id"], "series": 1}]
    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(
                    f"/api/v1/jobs/{job_id}/results?format=csv", headers=bearer(tokens["read"])
                ).get_data(as_text=True)
            )
        )
    )
    assert rows and {row["threshold"] for row in rows} == {"0.300000"}
    assert f"0.3000 for <code>{site}</code> (1 series, site profile {profile['id']})" in web.get(
        f"/jobs/{job_id}"
    ).get_data(as_text=True)
    own = client.post(
        "/api/v1/jobs", json={"source": "pacs", "threshold": 0.6}, headers=bearer(tokens["submit"])
    ).get_json()["id"]
    plan_and_score(api_settings, own, seed=2)
    assert (
        client.get(f"/api/v1/jobs/{own}", headers=bearer(tokens["read"])).get_json()["site_thresholds"] == []
    )
