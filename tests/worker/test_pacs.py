"""Study results back to the PACS (worker/pacs.py): the SR and KOS of a scored study join the
original study with UIDs that do not change between deliveries and parse back to the verdict;
a DICOM node receives them by C-STORE; failed deliveries are retried or given up with the
reason; a re-send is due at once."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest

from brainscan.testing import Service, StoreSCP, free_port
from db.deliveries import job_deliveries, resend
from db.models import utcnow
from db.studies import FLAGGED, study_verdicts
from tests.conftest import load_bench
from training.scorer import Scorer
from worker.pacs import deliver_due, object_uid, read_verdict, study_report

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def scorer(shipped_model: Path) -> Scorer:
    from training.backend import import_backend

    import_backend()
    return Scorer.load(shipped_model)


@pytest.fixture
def scored(embedded: Service, lgg_flair: Path, tmp_path: Path, scorer: Scorer) -> tuple[int, Path]:
    """A succeeded job over a two-study archive (single-frame series, multi-frame file), its results
    bound for the destination `pacs`: (job id, archive)."""
    archive = tmp_path / "archive"
    load_bench("dicom_archive").build_archive(lgg_flair, archive, patients=2, seed=0)
    job_id, _ = embedded.create_job(
        archive, model_version=scorer.version, threshold=scorer.threshold, batch_size=64, return_to="pacs"
    )
    batches: list[int] = []
    embedded.plan(job_id, enqueue=batches.extend)
    for batch_id in batches:
        embedded.score(batch_id, scorer=scorer, worker="t:1:t")
    assert embedded.job(job_id).status == "succeeded"
    return job_id, archive


@pytest.fixture
def store_scp() -> Iterator[StoreSCP]:
    scp = StoreSCP()
    yield scp
    scp.shutdown()


def test_a_succeeded_job_queues_each_dicom_study_for_its_destinations(
    embedded: Service, scored: tuple[int, Path]
) -> None:
    job_id, _ = scored
    with embedded.sessions()() as session:
        rows = job_deliveries(session=session, job_id=job_id)
        studies = {s.study_key for s in study_verdicts(session=session, job_id=job_id)}
    assert len(studies) == 2 and {(r.study_uid, r.destination) for r in rows} == {
        (s, "pacs") for s in studies
    }
    assert all(r.delivered_at is None and r.attempts == 0 for r in rows)


def test_the_report_joins_the_study_and_parses_back_to_its_verdict(
    embedded: Service, scored: tuple[int, Path]
) -> None:
    job_id, archive = scored
    sources = {}
    for path in archive.rglob("*"):
        if path.is_file() and path.name[:2] in ("IM", "MF"):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            sources[ds.SOPInstanceUID] = ds
    with embedded.sessions()() as session:
        verdicts = study_verdicts(session=session, job_id=job_id)
        for study in verdicts:
            report = study_report(session, job_id=job_id, study_uid=study.study_key)
            again = study_report(session, job_id=job_id, study_uid=study.study_key)
            sr = report.objects[0]
            meaning, score, referenced = read_verdict(sr)
            original = next(s for s in sources.values() if s.StudyInstanceUID == study.study_key)
            assert sr.StudyInstanceUID == study.study_key and sr.PatientID == original.PatientID
            assert sr.SOPInstanceUID == object_uid(study.study_key, job_id, "sr")
            assert [o.SOPInstanceUID for o in again.objects] == [o.SOPInstanceUID for o in report.objects]
            assert meaning == ("tumour suspected" if study.verdict == FLAGGED else "no tumour suspected")
            assert score == pytest.approx(study.score)
            assert set(referenced) <= set(sources) and (len(referenced) > 0) == (study.verdict == FLAGGED)
            if study.verdict == FLAGGED:
                ko = report.objects[1]
                assert ko.Modality == "KO" and ko.StudyInstanceUID == study.study_key
                listed = {
                    r.ReferencedSOPInstanceUID
                    for item in ko.CurrentRequestedProcedureEvidenceSequence
                    for s in item.ReferencedSeriesSequence
                    for r in s.ReferencedSOPSequence
                }
                assert listed == set(referenced)
    assert any(v.verdict == FLAGGED for v in verdicts), "lgg-flair's first two patients both have tumours"


def test_results_reach_a_dicom_node_once_and_a_resend_replaces_them(
    embedded: Service, scored: tuple[int, Path], store_scp: StoreSCP
) -> None:
    job_id, _ = scored
    settings = dataclasses.replace(
        embedded.settings, dicom_destinations=f"pacs=dicom://STORESCP@127.0.0.1:{store_scp.port}"
    )
    sessions = embedded.sessions()
    assert deliver_due(sessions=sessions, settings=settings) == 2
    assert deliver_due(sessions=sessions, settings=settings) == 0  # delivered: nothing due
    first = sorted(ds.SOPInstanceUID for ds in store_scp.received)
    assert {ds.Modality for ds in store_scp.received} == {"SR", "KO"}
    with sessions.begin() as session:
        rows = job_deliveries(session=session, job_id=job_id)
        assert all(r.delivered_at is not None and r.objects == 1 + (r.verdict == FLAGGED) for r in rows)
        assert resend(session=session, job_id=job_id, destinations=["pacs"], now=utcnow()) == 2
    assert deliver_due(sessions=sessions, settings=settings) == 2
    assert sorted(ds.SOPInstanceUID for ds in store_scp.received[len(first) :]) == first  # the same objects


def test_undeliverable_results_are_retried_then_given_up_with_the_reason(
    embedded: Service, scored: tuple[int, Path]
) -> None:
    job_id, archive = scored
    nobody = dataclasses.replace(
        embedded.settings, dicom_destinations=f"pacs=dicom://NOBODY@127.0.0.1:{free_port()}"
    )
    sessions = embedded.sessions()
    assert deliver_due(sessions=sessions, settings=nobody) == 0
    with sessions() as session:
        rows = job_deliveries(session=session, job_id=job_id)
    assert all(
        r.attempts == 1 and r.gave_up_at is None and "did not answer" in (r.last_error or "") for r in rows
    )
    assert all(r.next_at > utcnow() + timedelta(seconds=20) for r in rows)  # backoff: not due again yet
    unnamed = dataclasses.replace(embedded.settings, dicom_destinations="")
    later = utcnow() + timedelta(minutes=2)
    assert deliver_due(sessions=sessions, settings=unnamed, now=later) == 0
    with sessions() as session:
        assert all(
            "no destination 'pacs'" in (r.last_error or "")
            for r in job_deliveries(session=session, job_id=job_id)
        )
    shutil.rmtree(archive)  # retention took the files: trying again cannot help
    assert deliver_due(sessions=sessions, settings=nobody, now=later + timedelta(minutes=5)) == 0
    with sessions() as session:
        rows = job_deliveries(session=session, job_id=job_id)
    assert all(r.gave_up_at is not None and "no longer on disk" in (r.last_error or "") for r in rows)


def test_a_resend_to_a_new_destination_adds_its_rows(embedded: Service, scored: tuple[int, Path]) -> None:
    job_id, _ = scored
    with embedded.sessions().begin() as session:
        assert resend(session=session, job_id=job_id, destinations=["archive"], now=utcnow()) == 2
        rows = job_deliveries(session=session, job_id=job_id)
    assert sorted(r.destination for r in rows) == ["archive", "archive", "pacs", "pacs"]
    assert embedded.job(job_id).return_to == "pacs,archive"
