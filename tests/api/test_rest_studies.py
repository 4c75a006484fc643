"""GET /jobs/<id>/studies: a verdict per study from the DICOM test archive, series not assessed
with their reason, folder images as their folder's study, and the job JSON's study counts."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flask.testing import FlaskClient
from PIL import Image
from pydicom.uid import generate_uid
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from db.models import Batch, ImageResult
from tests.api.conftest import bearer, plan_and_score
from tests.conftest import load_bench


def _archive_with_a_localiser(root: Path, lgg_flair: Path) -> Path:
    """The DICOM test archive (3 studies), and in the first study a one-slice localiser series."""
    archive = root / "pacs"
    load_bench("dicom_archive").build_archive(lgg_flair, archive, patients=3, seed=0)
    first = sorted(archive.rglob("IM*"))[0]
    ds = pydicom.dcmread(first)
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType, ds.SeriesDescription = ["ORIGINAL", "PRIMARY", "LOCALIZER"], "3-plane loc"
    (first.parent.parent / "1_LOC").mkdir()
    ds.save_as(first.parent.parent / "1_LOC" / "IM0001")
    return archive


@pytest.fixture
def dicom_job(
    client: FlaskClient,
    tokens: dict[str, str],
    model: dict[str, object],
    api_settings: Settings,
    lgg_flair: Path,
) -> int:
    """A finished job over the DICOM test archive with a localiser series, seeded random scores."""
    archive = _archive_with_a_localiser(api_settings.source_roots[0], lgg_flair)
    response = client.post("/api/v1/jobs", json={"source": archive.name}, headers=bearer(tokens["submit"]))
    assert response.status_code == 202, response.get_json()
    job_id: int = response.get_json()["id"]
    plan_and_score(api_settings, job_id, seed=5)
    return job_id


def test_studies_have_verdicts_series_and_reasons(
    client: FlaskClient, tokens: dict[str, str], dicom_job: int
) -> None:
    job_id = dicom_job
    page = client.get(f"/api/v1/jobs/{job_id}/studies?limit=2", headers=bearer(tokens["read"])).get_json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["next_offset"] == 2
    rest = client.get(f"/api/v1/jobs/{job_id}/studies?offset=2", headers=bearer(tokens["read"])).get_json()
    studies = page["items"] + rest["items"]
    assert rest["next_offset"] is None
    order = {"flagged": 0, "not flagged": 1, "not assessed": 2}
    assert [order[s["verdict"]] for s in studies] == sorted(order[s["verdict"]] for s in studies)
    for study in studies:
        assessed = [s for s in study["series"] if s["verdict"] != "not assessed"]
        assert study["verdict"] == (
            "flagged" if any(s["flagged_images"] for s in assessed) else "not flagged"
        )
        assert study["score"] == max(s["score"] for s in assessed)
        assert study["images"] == sum(s["images"] for s in study["series"]) and study["pending"] == 0
    (with_loc,) = [s for s in studies if len(s["series"]) == 2]
    loc = next(s for s in with_loc["series"] if s["description"] == "3-plane loc")
    assert loc == {**loc, "verdict": "not assessed", "reason": "a localiser (scout) series", "images": 1}
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(tokens["read"])).get_json()
    flagged = sum(s["verdict"] == "flagged" for s in studies)
    assert job["studies"] == {"total": 3, "flagged": flagged, "not_assessed": 0}
    assert job["skipped_reasons"]["DICOMDIR (a directory of the other files)"] == 1
    csv_body = client.get(f"/api/v1/jobs/{job_id}/studies?format=csv", headers=bearer(tokens["read"]))
    rows = list(csv.DictReader(io.StringIO(csv_body.get_data(as_text=True))))
    assert [r["study_uid"] for r in rows] == [s["study_uid"] for s in studies]
    assert [(r["verdict"], int(r["images"]), int(r["series_not_assessed"])) for r in rows] == [
        (s["verdict"], s["images"], sum(x["verdict"] == "not assessed" for x in s["series"])) for s in studies
    ]
    listed = client.get("/api/v1/jobs", headers=bearer(tokens["read"])).get_json()["jobs"]
    assert listed[0]["studies"] is None  # counted only in one job's report


def test_folder_images_form_their_folder_s_study(
    client: FlaskClient, tokens: dict[str, str], job: int
) -> None:
    body = client.get(f"/api/v1/jobs/{job}/studies", headers=bearer(tokens["read"])).get_json()
    results = client.get(f"/api/v1/jobs/{job}/results", headers=bearer(tokens["read"])).get_json()["results"]
    by_folder: dict[str, list[dict[str, object]]] = {}
    for r in results:
        by_folder.setdefault(str(Path(str(r["path"])).parent), []).append(r)
    assert {s["study_uid"] for s in body["items"]} == set(by_folder)
    for study in body["items"]:
        images = by_folder[study["study_uid"]]
        assert study["images"] == len(images)
        assert study["flagged_images"] == sum(bool(r["flagged"]) for r in images)
        scored = [float(str(r["probability"])) for r in images if r["status"] == "scored"]
        assert study["score"] == (max(scored) if scored else None)


def test_studies_of_an_unknown_job_are_404(client: FlaskClient, tokens: dict[str, str]) -> None:
    assert client.get("/api/v1/jobs/999/studies", headers=bearer(tokens["read"])).status_code == 404
    assert client.get("/api/v1/jobs/1/studies?offset=-1", headers=bearer(tokens["read"])).status_code in (
        400,
        404,
    )


def test_the_job_page_lists_studies_and_a_frame_has_its_thumbnail(
    client: FlaskClient, tokens: dict[str, str], dicom_job: int, web: FlaskClient
) -> None:
    page = web.get(f"/jobs/{dicom_job}").get_data(as_text=True)
    assert 'id="studies-title"' in page and "not assessed: a localiser (scout) series" in page
    # seeded uniform scores are nothing like the model's own (mostly near 0 or 1): a shift banner
    job = client.get(f"/api/v1/jobs/{dicom_job}", headers=bearer(tokens["read"])).get_json()
    assert job["drift"]["status"] == "shifted" and job["drift"]["images"] >= 50
    assert 'data-drift="shifted"' in page
    assert page.count('class="verdict verdict-') == 3
    results = client.get(f"/api/v1/jobs/{dicom_job}/results?limit=500", headers=bearer(tokens["read"]))
    scored = [r for r in results.get_json()["results"] if r["status"] == "scored"]
    assert any(r["frame"] == 2 for r in scored)
    for r in scored:  # every transfer syntax of the archive, and frames of its multi-frame file
        thumb = web.get(f"/api/v1/jobs/{dicom_job}/results/{r['id']}/thumbnail")
        assert thumb.status_code == 200 and thumb.mimetype == "image/png", r
        assert np.asarray(Image.open(io.BytesIO(thumb.data))).max() > 0, r  # not a black square


def test_a_job_whose_slices_look_unlike_the_training_images_says_so(
    client: FlaskClient,
    tokens: dict[str, str],
    dicom_job: int,
    web: FlaskClient,
    sessions: sessionmaker[Session],
) -> None:
    """Out-of-distribution images (training.ood), counted per batch: the job's share in `drift`,
    and the page says that unflagged ones are not assessed."""
    with sessions.begin() as session:  # a third of each batch's scored images beyond the threshold
        session.execute(
            update(Batch).where(Batch.job_id == dicom_job).values(out_of_distribution=Batch.scored / 3)
        )
        missed = (ImageResult.job_id == dicom_job) & ImageResult.flagged.is_(False) & (ImageResult.label == 1)
        session.execute(update(ImageResult).where(missed).values(out_of_distribution=True, ood_distance=50.0))
    job = client.get(f"/api/v1/jobs/{dicom_job}", headers=bearer(tokens["read"])).get_json()
    assert 0.2 < job["drift"]["out_of_distribution"] < 0.34 and job["drift"]["status"] == "shifted"
    page = web.get(f"/jobs/{dicom_job}").get_data(as_text=True)
    assert "look unlike anything the model was trained on" in page and "<em>not assessed</em>" in page
    assert 'its negative means little">not assessed</span>' in page  # under a missed tumour's thumbnail
    results = client.get(
        f"/api/v1/jobs/{dicom_job}/results?false_negatives=true", headers=bearer(tokens["read"])
    )
    assert {r["assessment"] for r in results.get_json()["results"]} == {"not assessed"}


def test_metrics_give_each_site_its_score_shift(
    client: FlaskClient, tokens: dict[str, str], dicom_job: int
) -> None:
    """Sites are the DICOM manufacturer and station (the archive's scanners); their recent scores'
    shift, flag rate and count are Prometheus gauges."""
    text = client.get("/metrics", headers=bearer(tokens["read"])).get_data(as_text=True)
    images = {
        k: float(v) for k, v in re.findall(r'^brainscan_site_images\{site="([^"]+)"\} (\S+)$', text, re.M)
    }
    shift = {
        k: float(v)
        for k, v in re.findall(r'^brainscan_site_score_shift\{site="([^"]+)"\} (\S+)$', text, re.M)
    }
    job = client.get(f"/api/v1/jobs/{dicom_job}", headers=bearer(tokens["read"])).get_json()
    assert images and all(" / " in site for site in images)  # "<manufacturer> / <station>"
    assert sum(images.values()) == job["scored"]
    assert shift and all(shift[site] > 0.25 for site in shift)  # seeded uniform scores: shifted
