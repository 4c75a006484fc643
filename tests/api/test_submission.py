"""Bad input to POST /api/v1/jobs: folders leaving the archive root, hostile or broken archives.

Every refusal is a 4xx whose JSON body is a plain message, and nothing is left on disk.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from PIL import Image

from api import create_app
from brainscan.settings import Settings
from tests.api.conftest import bearer, plan_and_score
from tests.images import create_random_slice


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(create_random_slice(64, seed=seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(members: list[tuple[str, bytes]], *, symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # "Duplicate name": one test wants exactly that
        for name, data in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def make_tgz(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))
    return buffer.getvalue()


def upload(client: FlaskClient, token: str, name: str, data: bytes, **fields: str) -> Any:
    return client.post(
        "/api/v1/jobs",
        headers=bearer(token),
        content_type="multipart/form-data",
        data={"archive": (io.BytesIO(data), name), **fields},
    )


def assert_refused(response: Any, status: int, words: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert words in error["message"], error
    assert "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("source", "status", "words"),
    [
        ("../outside", 400, "'..'"),
        ("ward-1/../../outside", 400, "'..'"),
        ("/etc", 400, "not absolute"),
        ("\\\\server\\share", 400, "not absolute"),
        ("C:/Windows", 400, "not absolute"),
        ("~root", 400, "not absolute"),
        ("escape", 400, "outside the archive root"),
        ("no-such-ward", 400, "there is no folder"),
        ("ward-1/yes/slice-01.png", 400, "is not a folder"),
        ("", 400, "give a folder"),
    ],
)
def test_a_folder_must_stay_inside_the_archive_root(
    client: FlaskClient,
    tokens: dict[str, str],
    model: dict[str, object],
    source: str,
    status: int,
    words: str,
) -> None:
    response = client.post("/api/v1/jobs", json={"source": source}, headers=bearer(tokens["submit"]))
    assert_refused(response, status, words)


def test_a_link_inside_the_chosen_folder_is_not_followed_by_the_planner(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    assert api_settings.archive_root is not None
    (api_settings.archive_root / "ward-1" / "peek").symlink_to(api_settings.archive_root.parent / "outside")
    response = client.post("/api/v1/jobs", json={"source": "ward-1"}, headers=bearer(tokens["submit"]))
    job_id = response.get_json()["id"]
    plan_and_score(api_settings, job_id)
    body = client.get(f"/api/v1/jobs/{job_id}/results", headers=bearer(tokens["read"])).get_json()
    assert not [r for r in body["results"] if "secret" in r["path"]]


def test_a_body_that_is_not_json_is_refused_plainly(client: FlaskClient, tokens: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/jobs", data="source=ward-1", content_type="text/plain", headers=bearer(tokens["submit"])
    )
    assert_refused(response, 400, "send JSON")


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_an_uploaded_archive_is_extracted_and_scored_as_a_job(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings, kind: str
) -> None:
    members = [(f"scans/{label}/s{i}.png", png_bytes(i)) for i, label in enumerate(["yes", "no", "yes"])]
    data = make_zip(members) if kind == "zip" else make_tgz(list(members))
    response = upload(client, tokens["submit"], f"ward-7.{kind}", data, threshold="0.4")
    assert response.status_code == 202, response.get_data(as_text=True)
    job = response.get_json()
    assert (job["source"], job["source_kind"], job["threshold"]) == (f"ward-7.{kind}", "upload", 0.4)
    plan_and_score(api_settings, job["id"])
    done = client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(tokens["read"])).get_json()
    assert done["total"] == 3 and done["status"] == "succeeded"
    assert sum(done["confusion"].values()) == 3  # labels came from the yes/ and no/ folders inside
    leftovers = [p.name for p in api_settings.upload_dir.iterdir() if p.is_file()]
    assert leftovers == []  # the uploaded archive itself is gone once extracted


def tar_member(name: str, kind: bytes, **attrs: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


BOMB = b"\0" * 1_500_000  # deflates about 1000:1


@pytest.mark.parametrize(
    ("name", "data", "status", "words"),
    [
        ("slip.zip", make_zip([("../evil.png", b"x")]), 400, "points outside the archive"),
        ("slip.tgz", make_tgz([("a/../../evil.png", b"x")]), 400, "points outside the archive"),
        ("abs.zip", make_zip([("/etc/cron.d/evil", b"x")]), 400, "absolute path"),
        ("abs.tar.gz", make_tgz([("/tmp/evil", b"x")]), 400, "absolute path"),
        ("winabs.zip", make_zip([("C:\\evil.png", b"x")]), 400, "absolute path"),
        ("link.zip", make_zip([("a.png", b"/etc/passwd")], symlinks=("a.png",)), 400, "is a link"),
        (
            "link.tgz",
            make_tgz([tar_member("a.png", tarfile.SYMTYPE, linkname="/etc/passwd")]),
            400,
            "is a link",
        ),
        ("hard.tgz", make_tgz([tar_member("a.png", tarfile.LNKTYPE, linkname="b.png")]), 400, "is a link"),
        ("dev.tgz", make_tgz([tar_member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)]), 400, "device"),
        ("fifo.tgz", make_tgz([tar_member("pipe", tarfile.FIFOTYPE)]), 400, "device or special"),
        ("many.zip", make_zip([(f"{i}.png", b"x") for i in range(21)]), 413, "more than 20 files"),
        ("many.tgz", make_tgz([(f"{i}.png", b"x") for i in range(21)]), 413, "more than 20 files"),
        (
            "big.zip",
            make_zip([(f"{i}.bin", os.urandom(700_000)) for i in range(3)]),
            413,
            "more than 2,000,000 bytes",
        ),
        ("bomb.zip", make_zip([("zeros.png", BOMB)]), 413, "decompression bomb"),
        ("bomb.tgz", make_tgz([("zeros.png", BOMB)]), 413, "decompression bomb"),
        ("corrupt.zip", b"PK\x03\x04 this is not a zip at all" * 10, 400, "corrupt"),
        ("truncated.tgz", make_tgz([("a.png", os.urandom(50_000))])[:20_000], 400, "corrupt"),
        ("notgzip.tgz", b"plain text, not gzip", 400, "corrupt"),
        ("empty.zip", make_zip([]), 400, "holds no images"),
        ("twice.zip", make_zip([("a.png", b"1"), ("a.png", b"2")]), 400, "appears twice"),
        ("scans.rar", b"Rar!\x1a\x07\x00", 415, "upload a .zip, .tar.gz, .tgz archive"),
    ],
)
def test_a_hostile_or_broken_archive_is_refused_and_leaves_nothing_behind(
    client: FlaskClient,
    tokens: dict[str, str],
    model: dict[str, object],
    api_settings: Settings,
    name: str,
    data: bytes,
    status: int,
    words: str,
) -> None:
    assert_refused(upload(client, tokens["submit"], name, data), status, words)
    assert not (api_settings.archive_root.parent / "evil.png").exists()  # type: ignore[union-attr]
    assert list(api_settings.upload_dir.iterdir()) == []


def test_an_upload_over_the_size_limit_is_refused_with_413(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    response = upload(client, tokens["submit"], "huge.zip", os.urandom(3_100_000))
    assert_refused(response, 413, "larger than the limit of 3,000,000 bytes")


def test_an_upload_and_a_folder_at_once_is_ambiguous(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object]
) -> None:
    response = upload(client, tokens["submit"], "a.zip", make_zip([("a.png", png_bytes(1))]), source="ward-1")
    assert_refused(response, 400, "not both")


def test_a_repeated_upload_with_the_same_key_keeps_one_copy(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    data = make_zip([("a.png", png_bytes(1))])
    headers = {**bearer(tokens["submit"]), "Idempotency-Key": "upload-1"}
    answers = [
        client.post(
            "/api/v1/jobs",
            headers=headers,
            content_type="multipart/form-data",
            data={"archive": (io.BytesIO(data), "a.zip")},
        )
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [202, 200]
    assert len([p for p in api_settings.upload_dir.iterdir() if p.is_dir()]) == 1


def test_an_upload_without_a_registered_model_is_refused_and_removed(
    client: FlaskClient, tokens: dict[str, str], api_settings: Settings
) -> None:
    response = upload(client, tokens["submit"], "a.zip", make_zip([("a.png", png_bytes(1))]))
    assert_refused(response, 503, "no worker has registered a model")
    assert list(api_settings.upload_dir.iterdir()) == []


def test_an_overlong_idempotency_key_is_refused(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object]
) -> None:
    response = client.post(
        "/api/v1/jobs",
        json={"source": "ward-1"},
        headers={**bearer(tokens["submit"]), "Idempotency-Key": "k" * 256},
    )
    assert_refused(response, 400, "Idempotency-Key")


def test_a_job_may_be_stat_and_a_key_reused_with_another_priority_is_refused(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object]
) -> None:
    """Where a stat job's batches go is tested with real workers (tests/worker/test_triage.py)."""
    bad = client.post(
        "/api/v1/jobs", json={"source": "ward-1", "priority": "urgent"}, headers=bearer(tokens["submit"])
    )
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_priority"
    job = client.post(
        "/api/v1/jobs", json={"source": "ward-1", "priority": "stat"}, headers=bearer(tokens["submit"])
    ).get_json()
    assert job["priority"] == "stat"
    keyed = {**bearer(tokens["submit"]), "Idempotency-Key": "k1"}
    assert client.post("/api/v1/jobs", json={"source": "ward-1"}, headers=keyed).status_code == 202
    refused = client.post("/api/v1/jobs", json={"source": "ward-1", "priority": "stat"}, headers=keyed)
    assert refused.status_code == 422  # the same key with another priority is another request


def test_an_upload_while_the_disk_quota_is_full_is_refused_with_507(
    tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    busy = api_settings.received_dir / "1.2.3" / "1" / "4.5.6"  # a received study still being scored
    busy.mkdir(parents=True)
    (busy / "7.8.9.dcm").write_bytes(b"\0" * 4096)
    full = replace(api_settings, disk_quota_gb=4096 / 2**30)
    client = create_app(full, {"TESTING": True}).test_client()
    response = upload(client, tokens["submit"], "a.zip", make_zip([("a.png", png_bytes(1))]))
    assert_refused(response, 507, "disk quota for uploads and received studies")
    assert response.get_json()["error"]["code"] == "disk_quota_full"


def test_a_dicomweb_study_is_submitted_only_from_an_allowed_archive(
    tokens: dict[str, str], model: dict[str, object], api_settings: Settings
) -> None:
    pull = {"url": "http://pacs.example/dicom-web/", "study": "1.2.840.99.1"}
    off = create_app(api_settings, {"TESTING": True}).test_client()
    answer = off.post("/api/v1/jobs", json={"dicomweb": pull}, headers=bearer(tokens["submit"]))
    assert answer.status_code == 403 and answer.get_json()["error"]["code"] == "dicomweb_off"
    allowed = replace(
        api_settings,
        dicomweb_sources="http://pacs.example/dicom-web",
        dicom_destinations="pacs=dicom://P@h:104",
    )
    client = create_app(allowed, {"TESTING": True}).test_client()

    def post(body: dict[str, Any]) -> Any:
        return client.post("/api/v1/jobs", json=body, headers=bearer(tokens["submit"]))

    refused = [
        (
            {"dicomweb": {**pull, "url": "http://elsewhere/dicom-web"}},
            403,
            "not in BRAINSCAN_DICOMWEB_SOURCES",
        ),
        ({"dicomweb": {**pull, "url": "http://pacs.example/dicom-web-evil"}}, 403, "not in"),
        ({"dicomweb": {**pull, "study": "1.2.3/../../etc"}}, 400, "digits and dots"),
        ({"dicomweb": {**pull, "study": []}}, 400, "at most 100 studies"),
        ({"dicomweb": pull, "source": "ward-1"}, 400, "one of a folder"),
    ]
    for body, status, words in refused:
        assert_refused(post(body), status, words)
    made = post({"dicomweb": {**pull, "study": ["1.2.840.99.1", "1.2.840.99.2"]}})
    assert made.status_code == 202, made.get_json()
    job = made.get_json()
    assert job["source_kind"] == "dicomweb" and job["source"] == "pacs.example 1.2.840.99.1 and 1 more"
    assert job["return_to"] == ["pacs"]
    with create_app(allowed).app_context():
        from db.engine import get_sessionmaker
        from db.jobs import get_job

        with get_sessionmaker(allowed.resolved_database_url)() as session:
            stored = get_job(session=session, job_id=job["id"])
            assert stored is not None and stored.pull == {
                "url": "http://pacs.example/dicom-web",
                "studies": ["1.2.840.99.1", "1.2.840.99.2"],
            }
            assert Path(stored.source_path).parent == allowed.pulled_dir.resolve()
