"""Per-image results: filters, keyset pages, streamed CSV/JSON downloads, thumbnails of source images."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from flask.testing import FlaskClient
from PIL import Image

from brainscan.settings import Settings
from tests.api.conftest import bearer


def results(client: FlaskClient, token: str, job_id: int, query: str = "") -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}/results?{query}", headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


def test_results_filter_to_flagged_missed_and_unreadable_images(
    client: FlaskClient, tokens: dict[str, str], job: int
) -> None:
    everything = results(client, tokens["read"], job)["results"]
    assert len(everything) == 6 and {r["path"].split("/")[0] for r in everything} == {"yes", "no"}
    flagged = results(client, tokens["read"], job, "flagged=true")["results"]
    assert flagged and all(r["flagged"] is True for r in flagged)
    assert [r["id"] for r in flagged] == [r["id"] for r in everything if r["flagged"]]
    missed = results(client, tokens["read"], job, "false_negatives=1")["results"]
    assert [r["id"] for r in missed] == [
        r["id"] for r in everything if r["label"] == 1 and r["flagged"] is False
    ]
    errors = results(client, tokens["read"], job, "errors=true")["results"]
    assert len(errors) == 2 and all(r["status"] == "error" and r["error"] for r in errors)
    for bad in ("flagged=maybe", "limit=0", "after_id=-1", "format=xml"):
        response = client.get(f"/api/v1/jobs/{job}/results?{bad}", headers=bearer(tokens["read"]))
        assert response.status_code == 400, bad


def test_results_page_by_the_last_id_seen(client: FlaskClient, tokens: dict[str, str], job: int) -> None:
    first = results(client, tokens["read"], job, "limit=4")
    rest = results(client, tokens["read"], job, f"limit=4&after_id={first['next_after_id']}")
    ids = [r["id"] for r in first["results"] + rest["results"]]
    assert len(ids) == 6 and ids == sorted(ids) and rest["next_after_id"] is None


def test_the_csv_download_streams_one_row_per_image(
    client: FlaskClient, tokens: dict[str, str], job: int
) -> None:
    response = client.get(f"/api/v1/jobs/{job}/results?format=csv", headers=bearer(tokens["read"]))
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv"
    assert f'filename="brainscan-job-{job}.csv"' in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 6 and set(rows[0]) >= {"path", "label", "probability", "flagged", "status", "error"}
    assert sum(row["status"] == "error" for row in rows) == 2
    job_threshold = client.get(f"/api/v1/jobs/{job}", headers=bearer(tokens["read"])).get_json()["threshold"]
    assert {row["threshold"] for row in rows} == {f"{job_threshold:.6f}"} and {
        row["frame"] for row in rows
    } == {"0"}


def test_the_json_download_holds_the_filtered_results(
    client: FlaskClient, tokens: dict[str, str], job: int
) -> None:
    url = f"/api/v1/jobs/{job}/results?format=json&flagged=true"
    response = client.get(url, headers=bearer(tokens["read"]))
    assert response.is_streamed and "-flagged.json" in response.headers["Content-Disposition"]
    body = json.loads(response.get_data(as_text=True))
    assert body["job_id"] == job and body["results"] and all(r["flagged"] for r in body["results"])


def test_a_thumbnail_is_a_small_png_of_the_source_image(
    client: FlaskClient, tokens: dict[str, str], job: int
) -> None:
    scored = [r for r in results(client, tokens["read"], job)["results"] if r["status"] == "scored"]
    url = f"/api/v1/jobs/{job}/results/{scored[0]['id']}/thumbnail"
    response = client.get(url, headers=bearer(tokens["read"]))
    assert response.status_code == 200 and response.mimetype == "image/png"
    image = Image.open(io.BytesIO(response.data))
    assert image.format == "PNG" and max(image.size) <= 192 and image.mode == "L"


def test_the_whole_slice_opens_at_its_own_size(
    client: FlaskClient, tokens: dict[str, str], job: int, api_settings: Settings
) -> None:
    from tests.images import create_random_slice, save_image

    first = next(r for r in results(client, tokens["read"], job)["results"] if r["status"] == "scored")
    assert api_settings.archive_root is not None
    save_image(api_settings.archive_root / "ward-1" / first["path"], create_random_slice(320, seed=1))
    url = f"/api/v1/jobs/{job}/results/{first['id']}/thumbnail"
    small = Image.open(io.BytesIO(client.get(url, headers=bearer(tokens["read"])).data))
    full = Image.open(io.BytesIO(client.get(url + "?size=full", headers=bearer(tokens["read"])).data))
    assert max(small.size) == 192 and full.size == (320, 320) and full.mode == "L"
    assert client.get(url + "?size=huge", headers=bearer(tokens["read"])).status_code == 400


def test_a_thumbnail_of_another_jobs_result_or_a_removed_file_is_404(
    client: FlaskClient, tokens: dict[str, str], job: int, api_settings: Settings
) -> None:
    first = results(client, tokens["read"], job)["results"][0]
    assert (
        client.get(
            f"/api/v1/jobs/{job + 1}/results/{first['id']}/thumbnail", headers=bearer(tokens["read"])
        ).status_code
        == 404
    )
    assert api_settings.archive_root is not None
    (api_settings.archive_root / "ward-1" / first["path"]).unlink()
    url = f"/api/v1/jobs/{job}/results/{first['id']}/thumbnail"
    response = client.get(url, headers=bearer(tokens["read"]))
    assert response.status_code == 404 and "no longer" in response.get_json()["error"]["message"]


def test_a_thumbnail_of_an_unreadable_image_says_why(
    client: FlaskClient, tokens: dict[str, str], job: int, api_settings: Settings
) -> None:
    first = results(client, tokens["read"], job)["results"][0]
    assert api_settings.archive_root is not None
    (api_settings.archive_root / "ward-1" / first["path"]).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    url = f"/api/v1/jobs/{job}/results/{first['id']}/thumbnail"
    response = client.get(url, headers=bearer(tokens["read"]))
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "unreadable_image"
