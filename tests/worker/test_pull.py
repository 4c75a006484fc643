"""A DICOMweb job retrieves its study from a real archive (Orthanc's DICOMweb plugin, on
loopback) with WADO-RS into its own folder, then plans it like any DICOM folder; a study the
archive does not hold, a URL off the allow-list and a study over the limits fail the job with the
reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from brainscan.testing import Orthanc, Service, running_orthanc
from db.jobs import create_job
from tests.worker.test_receive import instance

pytestmark = pytest.mark.slow  # Orthanc starts in a few seconds


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[Orthanc, str]]:
    """Orthanc holding one three-slice MR study: (Orthanc, its StudyInstanceUID)."""
    study, series = generate_uid(), generate_uid()
    files = [instance(tmp_path / "study", study, series, n) for n in (1, 2, 3)]
    with running_orthanc(tmp_path / "orthanc", modalities={}) as orthanc:
        orthanc.upload(files)
        yield orthanc, study


def _job(service: Service, url: str, studies: list[str]) -> int:
    folder = service.settings.pulled_dir.resolve() / "20261205-000000-test"
    with service.sessions().begin() as session:
        job, _ = create_job(
            session=session,
            source="archive",
            source_kind="dicomweb",
            source_path=str(folder),
            submitted_by="test",
            model_version="m",
            threshold=0.5,
            batch_size=2,
            pull={"url": url, "studies": studies},
        )
        return job.id


def _allowed(embedded: Service, orthanc: Orthanc, **changes: object) -> Service:
    return Service(
        {
            **embedded.env,
            "BRAINSCAN_DICOMWEB_SOURCES": orthanc.dicomweb,
            **{f"BRAINSCAN_{k.upper()}": str(v) for k, v in changes.items()},
        }
    )


def test_a_dicomweb_job_retrieves_its_study_and_plans_it(
    embedded: Service, archive: tuple[Orthanc, str]
) -> None:
    orthanc, study = archive
    service = _allowed(embedded, orthanc)
    job_id = _job(service, orthanc.dicomweb, [study])
    batches: list[int] = []
    assert service.plan(job_id, enqueue=batches.extend) == 3
    job = service.job(job_id)
    assert job.status == "running" and len(batches) == 2
    files = sorted(Path(job.source_path).rglob("*.dcm"))
    assert [f.parent.parent.name for f in files] == [study] * 3  # <study>/<series>/<sop>.dcm
    with service.sessions()() as session:
        from db.studies import study_verdicts

        (found,) = study_verdicts(session=session, job_id=job_id)
    assert found.study_key == study and found.total("images") == 3


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown study", "is not at"),
        ("off the allow-list", "not in BRAINSCAN_DICOMWEB_SOURCES"),
        ("over the limit", "more than 2 instances"),
    ],
)
def test_a_dicomweb_job_that_cannot_be_retrieved_fails_with_the_reason(
    embedded: Service, archive: tuple[Orthanc, str], case: str, reason: str
) -> None:
    orthanc, study = archive
    service = _allowed(embedded, orthanc, max_archive_files=2 if case == "over the limit" else 1_000_000)
    if case == "off the allow-list":
        service = Service({**service.env, "BRAINSCAN_DICOMWEB_SOURCES": ""})
    job_id = _job(service, orthanc.dicomweb, [generate_uid() if case == "unknown study" else study])
    assert service.plan(job_id, enqueue=lambda ids: None) == 0
    job = service.job(job_id)
    assert job.status == "failed" and reason in (job.error or ""), job.error
