"""Into the department and back, with real processes on loopback: Orthanc (a PACS) sends a study
made from real lgg-flair slices to `brainscan up`'s DICOM listener; the study becomes a job; its
SR and KOS arrive in Orthanc under the original StudyInstanceUID (found by QIDO-RS), by C-STORE
and by STOW-RS, parse back to the verdict the API gives, and a second delivery does not
duplicate them. Prints the seconds from the last instance sent to the SR in the PACS."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from brainscan.testing import Up, free_port, running_orthanc, wait_for
from tests.conftest import load_bench
from worker.pacs import KO_SERIES_NUMBER, SR_SERIES_NUMBER, read_verdict

pytestmark = [pytest.mark.slow, pytest.mark.data]
STABLE = 2  # seconds without a new instance before the received study becomes a job


def test_a_study_from_the_pacs_comes_back_as_an_sr_and_kos_once(tmp_path: Path, lgg_flair: Path) -> None:
    archive = tmp_path / "export"
    load_bench("dicom_archive").build_archive(lgg_flair, archive, patients=1, seed=0)
    files = sorted(p for p in archive.rglob("*") if p.is_file() and p.name[:2] in ("IM", "SR", "PR"))
    listener_port, api_port = free_port(), free_port()
    with running_orthanc(
        tmp_path / "orthanc", modalities={"brainscan": ("BRAINSCAN", listener_port)}
    ) as pacs:
        orthanc_study = pacs.upload(files)
        study_uid = pacs.json("GET", f"/studies/{orthanc_study}")["MainDicomTags"]["StudyInstanceUID"]
        env = {
            "BRAINSCAN_DICOM_PORT": str(listener_port),
            "BRAINSCAN_DICOM_STABLE_SECONDS": str(STABLE),
            "BRAINSCAN_DICOM_DESTINATIONS": (
                f"pacs=dicom://ORTHANC@127.0.0.1:{pacs.dicom_port}, web={pacs.dicomweb}"
            ),
            "BRAINSCAN_WATCHDOG_INTERVAL": "1",
        }
        up = Up(tmp_path / "data", tmp_path, api_port, env=env)
        try:
            token = re.search(r"API token:\s+(bs_\S+)", up.banner).group(1)  # type: ignore[union-attr]
            pacs.send_study("brainscan", orthanc_study)  # Orthanc C-STOREs every instance, then returns
            sent = time.monotonic()
            assert wait_for(lambda: pacs.find_instances(study_uid, "SR", SR_SERIES_NUMBER), 120), (
                "no SR came back"
            )
            took = time.monotonic() - sent
            print(f"SR in the PACS {took:.1f} s after the last instance was sent (stable time {STABLE} s)")
            (job,) = up.request("GET", "/api/v1/jobs", token)["jobs"]
            job = up.request("GET", f"/api/v1/jobs/{job['id']}", token)
            assert job["status"] == "succeeded" and job["total"] == len(
                [f for f in files if f.name[:2] == "IM"]
            )
            (study,) = up.request("GET", f"/api/v1/jobs/{job['id']}/studies", token)["items"]
            assert study["study_uid"] == study_uid and job["return_to"] == ["pacs", "web"]

            ((_, sr_uid),) = pacs.find_instances(study_uid, "SR", SR_SERIES_NUMBER)
            sr = pacs.retrieve(sr_uid)
            meaning, score, referenced = read_verdict(sr)
            expected = {"flagged": "tumour suspected", "not flagged": "no tumour suspected"}[study["verdict"]]
            assert sr.StudyInstanceUID == study_uid and meaning == expected
            assert score == pytest.approx(study["score"])
            assert len(referenced) == study["flagged_images"]
            kos = pacs.find_instances(study_uid, "KO", KO_SERIES_NUMBER)
            assert len(kos) == (1 if study["flagged_images"] else 0)

            def delivered(report: dict[str, Any]) -> bool:
                return [d["state"] for d in report["deliveries"]] == ["delivered", "delivered"]

            assert wait_for(lambda: delivered(up.request("GET", f"/api/v1/jobs/{job['id']}", token)), 30)
            instances = len(pacs.json("GET", f"/studies/{orthanc_study}/instances"))
            again = up.request("POST", f"/api/v1/jobs/{job['id']}/deliveries", token, {})
            assert [d["state"] for d in again["deliveries"]] == ["pending", "pending"]
            assert wait_for(lambda: delivered(up.request("GET", f"/api/v1/jobs/{job['id']}", token)), 30)
            assert (
                len(pacs.json("GET", f"/studies/{orthanc_study}/instances")) == instances
            )  # replaced, not added
            assert len(pacs.find_instances(study_uid, "SR", SR_SERIES_NUMBER)) == 1
        finally:
            up.stop()
