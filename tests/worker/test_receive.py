"""The DICOM listener over loopback: C-ECHO, C-STORE of a study by a real association
(pynetdicom's SCU), one job per stable study, duplicates ignored, a follow-up job for instances
that come later, and callers off the allow-list refused."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from brainscan.testing import Service, wait_for
from db.audit import list_events
from db.jobs import get_job
from db.model_versions import register_model_version
from db.received import received_study
from tests.images import create_random_slice, write_dicom
from worker.receive import Receiver, serve, valid_uid

STABLE = 1.0  # seconds without a new instance before a study becomes a job


@dataclasses.dataclass
class Listener:
    port: int
    jobs: list[int]
    settings: Settings


@pytest.fixture
def listener(embedded: Service) -> Iterator[Listener]:
    settings = dataclasses.replace(
        embedded.settings, dicom_port=0, dicom_stable_seconds=STABLE, dicom_callers="MODALITY,PACS"
    )
    sessions = embedded.sessions()
    register_a_model(sessions)
    jobs: list[int] = []
    ports: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(settings, sessions, jobs.append), kwargs={"stop": stop, "ready": ports.append}
    )
    thread.start()
    assert wait_for(lambda: bool(ports), 10), "the listener did not start"
    yield Listener(ports[0], jobs, settings)
    stop.set()
    thread.join(10)


def register_a_model(sessions: sessionmaker[Session]) -> None:
    """A current model version (m-1, threshold 0.3), as a starting worker registers its own:
    received studies become jobs only once there is one."""
    with sessions.begin() as session:
        register_model_version(
            session=session,
            version="m-1",
            file="m.keras",
            sha256="0" * 64,
            threshold=0.3,
            metrics={},
            card={},
        )


def instance(folder: Path, study: str, series: str, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = write_dicom(
        folder / f"{series[-6:]}-{n}.dcm", create_random_slice(64, seed=n).astype(np.uint16) * 16
    )
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, n
    ds.PatientID, ds.Manufacturer, ds.StationName = "PAT-1", "SIEMENS", "RGHMR01"
    ds.save_as(path)
    return path


def send(port: int, files: list[Path], calling: str = "MODALITY") -> list[int] | None:
    """C-ECHO, then C-STORE each file in one association: the statuses, None when refused."""
    from pynetdicom import AE
    from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=calling)
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="BRAINSCAN")
    if not assoc.is_established:
        return None
    try:
        statuses = [int(assoc.send_c_echo().Status)]
        statuses += [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in files]
    finally:
        assoc.release()
    return statuses


def test_a_stable_study_becomes_one_job_and_later_instances_a_follow_up(
    listener: Listener, embedded: Service, tmp_path: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    first = [instance(tmp_path / "out", study, series, n) for n in range(1, 4)]
    assert send(listener.port, first) == [0, 0, 0, 0]
    assert wait_for(lambda: len(listener.jobs) == 1, 10 * STABLE), "no job for the stable study"
    received = listener.settings.received_dir.resolve() / study
    assert sorted(p.name for p in (received / "1" / series).iterdir()) == sorted(
        f"{pydicom.dcmread(f).SOPInstanceUID}.dcm" for f in first
    )
    assert send(listener.port, first[:1]) == [0, 0]  # sent again: acknowledged, nothing new
    later = [instance(tmp_path / "out", study, series, n) for n in range(4, 6)]
    assert send(listener.port, later, calling="PACS") == [0, 0, 0]
    assert wait_for(lambda: len(listener.jobs) == 2, 10 * STABLE), "no follow-up job"
    with embedded.sessions()() as session:
        jobs = [get_job(session=session, job_id=j) for j in listener.jobs]
        row = received_study(session=session, study_uid=study)
        assert row is not None and (row.instances, row.duplicates, row.delivery) == (5, 1, 3)
        events = [(e.action, e.actor) for e in list_events(session=session, action="job.submit")]
    assert [j.source for j in jobs if j] == [f"received/{study}/1", f"received/{study}/2"]
    assert sorted(events) == [("job.submit", "dicom:MODALITY"), ("job.submit", "dicom:PACS")]
    assert all(j is not None and j.site_profiles and j.threshold == 0.3 for j in jobs)
    for job_id, expected in zip(listener.jobs, (3, 2), strict=True):  # the planner reads them as DICOM
        assert embedded.plan(job_id, enqueue=lambda _ids: None) == expected


def test_callers_off_the_allow_list_are_refused(listener: Listener, tmp_path: Path) -> None:
    study = generate_uid()
    assert send(listener.port, [instance(tmp_path, study, generate_uid(), 1)], calling="INTRUDER") is None
    assert not (listener.settings.received_dir / study).exists()


def test_only_uids_become_file_names(embedded: Service) -> None:
    assert valid_uid("1.2.840.10008.5.1.4.1.1.4") == "1.2.840.10008.5.1.4.1.1.4"
    for bad in ("../../etc", "1.2/3", "", "1." * 40 + "1", "1.2.x", None):
        assert valid_uid(bad) is None, bad
    receiver = Receiver(
        dataclasses.replace(embedded.settings, dicom_addresses="10.0.0.5"), embedded.sessions()
    )
    assert not receiver.allowed("127.0.0.1", "MODALITY") and receiver.allowed("10.0.0.5", "ANY")


def test_a_full_disk_quota_refuses_instances_with_out_of_resources(embedded: Service, tmp_path: Path) -> None:
    from worker.receive import OUT_OF_RESOURCES, SUCCESS

    study, series = generate_uid(), generate_uid()
    files = [instance(tmp_path / "out", study, series, n) for n in (1, 2)]
    size = files[0].stat().st_size
    roomy = dataclasses.replace(embedded.settings, disk_quota_gb=1.5 * size / 2**30)  # one instance fits
    receiver = Receiver(roomy, embedded.sessions())

    def store(path: Path) -> int:
        return receiver.store(pydicom.dcmread(path), path.read_bytes, "127.0.0.1", "MODALITY")

    assert [store(f) for f in files] == [SUCCESS, OUT_OF_RESOURCES]  # the sender keeps the second
    assert len(list(roomy.received_dir.rglob("*.dcm"))) == 1
    with embedded.sessions()() as session:
        row = received_study(session=session, study_uid=study)
        assert row is not None and row.instances == 1


def test_one_instance_sent_twice_at_once_is_stored_and_counted_once(
    embedded: Service, tmp_path: Path
) -> None:
    """Two associations with the same instance both find it missing, then store it: the study's
    lock lets one write it; the other counts a duplicate (the instance count is not inflated)."""
    from worker.receive import SUCCESS

    study, series = generate_uid(), generate_uid()
    path = instance(tmp_path / "out", study, series, 1)
    receiver = Receiver(embedded.settings, embedded.sessions())
    both_checked = threading.Barrier(2, timeout=10)

    def encoded() -> bytes:  # asked for only after the first look for the file found none
        both_checked.wait()
        return path.read_bytes()

    statuses: list[int] = []
    senders = [
        threading.Thread(
            target=lambda: statuses.append(
                receiver.store(pydicom.dcmread(path), encoded, "127.0.0.1", "PACS")
            )
        )
        for _ in range(2)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    assert statuses == [SUCCESS, SUCCESS]
    assert len(list(embedded.settings.received_dir.rglob("*.dcm"))) == 1
    with embedded.sessions()() as session:
        row = received_study(session=session, study_uid=study)
        assert row is not None and (row.instances, row.duplicates, row.open_instances) == (1, 1, 1)
