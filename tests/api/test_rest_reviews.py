"""Review over REST: the queue, verdicts that need the review scope and are audited, the figures."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from brainscan.cli import main
from brainscan.settings import Settings
from db.audit import list_events
from tests.api.conftest import bearer
from training.dataset import discover


def test_a_reviewer_works_through_the_queue_and_the_figures_follow(
    client: FlaskClient, tokens: dict[str, str], job: int, sessions: sessionmaker[Session]
) -> None:
    queue = client.get(f"/api/v1/jobs/{job}/review-queue", headers=bearer(tokens["read"])).get_json()["items"]
    assert queue and all(r["flagged"] for r in queue)  # this small job's sample of unflagged is empty
    assert [r["probability"] for r in queue] == sorted((r["probability"] for r in queue), reverse=True)
    first = queue[0]
    url = f"/api/v1/jobs/{job}/results/{first['id']}/review"
    refused = client.post(url, json={"verdict": "tumour"}, headers=bearer(tokens["submit"]))
    assert refused.status_code == 403 and "review" in refused.get_json()["error"]["message"]
    assert client.post(url, json={"verdict": "perhaps"}, headers=bearer(tokens["review"])).status_code == 400
    stored = client.post(url, json={"verdict": "tumour"}, headers=bearer(tokens["review"])).get_json()
    assert stored["verdict"] == "tumour" and stored["reviewer"].startswith("token:review-bot#")
    again = client.get(f"/api/v1/jobs/{job}/review-queue", headers=bearer(tokens["read"])).get_json()["items"]
    assert first["id"] not in {r["id"] for r in again}
    figures = client.get(f"/api/v1/jobs/{job}/reviewed", headers=bearer(tokens["read"])).get_json()
    assert figures["reviewed"] == {"tp": 1, "fp": 0, "tn": 0, "fn": 0}
    assert figures["recall"] is None  # no unflagged image reviewed: missed tumours are unknown
    with sessions() as session:
        (event,) = [e for e in list_events(session=session, job_id=job) if e.action == "review.verdict"]
    assert event.actor == stored["reviewer"] and event.detail == {
        "result_id": first["id"],
        "verdict": "tumour",
    }


def test_reviewing_an_image_of_another_job_is_404(
    client: FlaskClient, tokens: dict[str, str], job: int
) -> None:
    response = client.post(
        f"/api/v1/jobs/{job}/results/999999/review",
        json={"verdict": "tumour"},
        headers=bearer(tokens["review"]),
    )
    assert response.status_code == 404


def test_labels_export_writes_what_training_reads(
    client: FlaskClient, tokens: dict[str, str], job: int, api_settings: Settings, tmp_path: Path
) -> None:
    """Two verdicts exported as labels.csv; put beside the job's images, discovery reads them over
    the folder names (an unsure verdict is left out)."""
    queue = client.get(f"/api/v1/jobs/{job}/review-queue", headers=bearer(tokens["read"])).get_json()["items"]
    verdicts = dict(zip([r["id"] for r in queue[:3]], ("no tumour", "tumour", "unsure"), strict=False))
    for result_id, verdict in verdicts.items():
        url = f"/api/v1/jobs/{job}/results/{result_id}/review"
        assert (
            client.post(url, json={"verdict": verdict}, headers=bearer(tokens["review"])).status_code == 200
        )
    env = {"BRAINSCAN_DATABASE_URL": str(api_settings.database_url), "BRAINSCAN_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["labels", "export", str(job)], env=env)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    by_path = {r["path"]: r for r in queue[:3]}
    assert sorted((by_path[row["path"]]["id"], row["label"]) for row in rows) == sorted(
        (rid, "1" if v == "tumour" else "0") for rid, v in verdicts.items() if v != "unsure"
    )
    folder = tmp_path / "copy"
    shutil.copytree(api_settings.source_roots[0] / "ward-1", folder)
    (folder / "labels.csv").write_text(result.stdout)
    found = {r.relpath: r for r in discover([folder]).images}
    for row in rows:
        assert (found[row["path"]].label, found[row["path"]].category) == (int(row["label"]), "labels.csv")


def test_the_review_page_shows_the_queue_and_refuses_verdicts_without_the_scope(
    web: FlaskClient, job: int
) -> None:
    page = web.get(f"/jobs/{job}/review").get_data(as_text=True)
    assert 'id="queue-title"' in page and "it needs the <code>review</code> scope" in page
    assert 'name="verdict"' not in page  # an operator without `review` gets no buttons
    token = page.split('name="csrf_token" value="')[1].split('"')[0] if 'name="csrf_token"' in page else ""
    response = web.post(f"/jobs/{job}/review/1", data={"verdict": "tumour", "csrf_token": token})
    assert response.status_code == 403
