"""Study results back to the PACS: per DICOM study of a job, a Structured Report (TID 1500,
built with highdicom) and a Key Object Selection of its flagged slices, sent to each destination
the job's `return_to` names (BRAINSCAN_DICOM_DESTINATIONS) by C-STORE or STOW-RS.

Both objects join the original study (its StudyInstanceUID, patient and study modules, read from
the job's own files when they are sent; nothing of them is stored or logged) in series of their
own. Their UIDs are derived from the study's UID, the job and the object's kind, so sending a
study's results again replaces them in the PACS rather than adding a copy. The SR holds one
measurement group: finding type Neoplasm, a verdict (tumour suspected / no tumour suspected /
not assessed), the study's score (its highest slice probability) and the threshold, the
algorithm (brainscan, the model version) and the flagged slices as its source images.

The rows to send are written when a job succeeds (db.deliveries); the workers' watchdog sends
what is due on each sweep, with retries and backoff like webhooks (db.outbox).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Destination, Settings
from db.deliveries import any_instance, flagged_instances
from db.jobs import get_job
from db.models import ResultDelivery, utcnow
from db.outbox import claim_due, describe_wait, mark_sent, record_failure
from db.studies import FLAGGED, NOT_FLAGGED, StudyVerdict, study_verdicts

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 10
TIMEOUT = 30.0  # seconds for an association or an HTTP request
SCHEME = "99BRAINSCAN"  # the private coding scheme of the concepts DICOM has no code for
SR_SERIES_NUMBER, KO_SERIES_NUMBER = 9901, 9902
VERDICT_CODES = {  # the study verdict -> the SR's coded value
    FLAGGED: ("TUMOUR_SUSPECTED", "tumour suspected"),
    NOT_FLAGGED: ("NO_TUMOUR_SUSPECTED", "no tumour suspected"),
}
NOT_ASSESSED_CODE = ("NOT_ASSESSED", "not assessed")
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://brainscan/dicom-results")


class DeliveryError(Exception):
    """The results could not be sent; `permanent`: trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Report:
    """What goes back for one study: the SR, the KOS when a slice was flagged, and the verdict."""

    verdict: str
    objects: list[Dataset]


def concept(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


def object_uid(study_uid: str, job_id: int, kind: str) -> str:
    """The UID of one object (or series) a job returns for a study: the same every time, a
    name-based (version 5) UUID under the 2.25 root (ISO/IEC 9834-8)."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, f'{study_uid}/{job_id}/{kind}').int}"


def build_report(
    study: StudyVerdict,
    *,
    job_id: int,
    model_version: str,
    threshold: float,
    head: Dataset,
    flagged: list[tuple[Dataset, int]],
) -> Report:
    """The SR (and KOS) for `study`: `head` is one of its instances' headers (the patient and
    study modules come from it), `flagged` the flagged slices' headers with their frame (0: a
    single-frame file)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    study_uid = study.study_key
    algorithm = hd.sr.AlgorithmIdentification(
        name="brainscan", version=model_version, parameters=[f"threshold={threshold:.6g}"]
    )
    value, meaning = VERDICT_CODES.get(study.verdict, NOT_ASSESSED_CODE)
    measurements = []
    if study.score is not None:
        measurements = [
            hd.sr.Measurement(
                name=concept("SCORE", "tumour score (highest slice probability)"),
                value=float(study.score),
                unit=codes.UCUM.NoUnits,
                algorithm_id=algorithm,
            ),
            hd.sr.Measurement(
                name=concept("THRESHOLD", "decision threshold"),
                value=float(threshold),
                unit=codes.UCUM.NoUnits,
                algorithm_id=algorithm,
            ),
        ]
    sources = [
        hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=ds.SOPClassUID,
            referenced_sop_instance_uid=ds.SOPInstanceUID,
            referenced_frame_numbers=[frame] if frame else None,
        )
        for ds, frame in flagged
    ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=object_uid(study_uid, job_id, "tracking"), identifier="brain tumour screening"
        ),
        finding_type=codes.SCT.Neoplasm,
        algorithm_id=algorithm,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=concept("VERDICT", "screening verdict"), value=concept(value, meaning)
            )
        ],
        measurements=measurements or None,
        source_images=sources or None,
    )
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=object_uid("device", 0, "brainscan"), name="brainscan", model_name=model_version
        ),
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.BrainMRI,
        imaging_measurements=[group],
        title=codes.DCM.ImagingMeasurementReport,
    )
    instances = list(dict.fromkeys(ds.SOPInstanceUID for ds, _ in flagged))
    evidence = [next(ds for ds, _ in flagged if ds.SOPInstanceUID == uid) for uid in instances] or [head]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content,
        series_instance_uid=object_uid(study_uid, job_id, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=object_uid(study_uid, job_id, "sr"),
        instance_number=1,
        manufacturer="brainscan",
        is_complete=True,
        series_description=f"brainscan screening: {meaning}",
    )
    objects: list[Dataset] = [sr]
    if flagged:
        objects.append(
            hd.ko.KeyObjectSelectionDocument(
                evidence=evidence,
                content=hd.ko.KeyObjectSelection(
                    document_title=codes.DCM.OfInterest,
                    referenced_objects=evidence,
                    description=f"slices brainscan flagged ({model_version})",
                ),
                series_instance_uid=object_uid(study_uid, job_id, "ko-series"),
                series_number=KO_SERIES_NUMBER,
                sop_instance_uid=object_uid(study_uid, job_id, "ko"),
                instance_number=1,
                manufacturer="brainscan",
                series_description="brainscan flagged slices",
            )
        )
    return Report(study.verdict, objects)


def read_verdict(sr: Dataset) -> tuple[str, float | None, list[str]]:
    """(verdict meaning, score, referenced SOP Instance UIDs) of an SR this module made, parsed
    back with highdicom: what a PACS-side reader would see."""
    import highdicom as hd

    parsed = hd.sr.Comprehensive3DSR.from_dataset(sr)
    content: Any = parsed.content  # a MeasurementReport, as build_report wrote it
    (group,) = content.get_image_measurement_groups()
    (verdict,) = group.get_qualitative_evaluations(name=concept("VERDICT", "screening verdict"))
    scores = group.get_measurements(name=concept("SCORE", "tumour score (highest slice probability)"))
    sources = [s.referenced_sop_instance_uid for s in group.source_images]
    return verdict.value.meaning, (float(scores[0].value) if scores else None), sources


def study_report(session: Session, *, job_id: int, study_uid: str) -> Report:
    """Read what the job found for the study and the headers of its files; build its report."""
    import pydicom

    job = get_job(session=session, job_id=job_id)
    if job is None:
        raise DeliveryError("the job was deleted", permanent=True)
    verdicts = study_verdicts(session=session, job_id=job_id, study_keys=[study_uid])
    first = any_instance(session=session, job_id=job_id, study_uid=study_uid)
    if not verdicts or first is None:
        raise DeliveryError("the job holds no image of this study", permanent=True)
    root = Path(job.source_path)

    def header(relpath: str) -> Dataset:
        try:
            return pydicom.dcmread(root / relpath, stop_before_pixels=True)
        except FileNotFoundError as exc:
            raise DeliveryError(
                "the study's files are no longer on disk (removed by retention or by hand)", permanent=True
            ) from exc
        except Exception as exc:  # pydicom raises many types for a damaged header
            raise DeliveryError(
                f"cannot read a header of the study: {type(exc).__name__}", permanent=True
            ) from exc

    flagged = flagged_instances(session=session, job_id=job_id, study_uid=study_uid)
    headers = {relpath: header(relpath) for relpath in dict.fromkeys(r for r, _ in flagged)}
    return build_report(
        verdicts[0],
        job_id=job_id,
        model_version=job.model_version,
        threshold=job.threshold,
        head=next(iter(headers.values())) if headers else header(first),  # its flagged slices' own, if any
        flagged=[(headers[relpath], frame) for relpath, frame in flagged],
    )


def send(destination: Destination, objects: list[Dataset], *, calling_ae: str) -> None:
    """Store `objects` at `destination`; DeliveryError when it did not take every one."""
    if destination.dicomweb:
        _stow(destination, objects)
    else:
        _c_store(destination, objects, calling_ae=calling_ae)


def _c_store(destination: Destination, objects: list[Dataset], *, calling_ae: str) -> None:
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    for sop_class in dict.fromkeys(ds.SOPClassUID for ds in objects):
        ae.add_requested_context(sop_class)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise DeliveryError(
            f"{destination.ae_title} at {destination.host}:{destination.port} refused or did not answer "
            "the association"
        )
    try:
        for ds in objects:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise DeliveryError(f"{destination.ae_title} did not answer a C-STORE")
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success, or a warning that stored it
                raise DeliveryError(f"{destination.ae_title} answered C-STORE with status 0x{code:04X}")
    finally:
        assoc.release()


def _stow(destination: Destination, objects: list[Dataset]) -> None:
    import requests
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=destination.url)
    try:
        client.store_instances(datasets=objects)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "error"
        raise DeliveryError(f"STOW-RS to {destination.name}: HTTP {status}") from exc
    except requests.RequestException as exc:
        raise DeliveryError(f"STOW-RS to {destination.name}: not reached ({type(exc).__name__})") from exc


def deliver_due(*, sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None) -> int:
    """Send every study result due; returns how many were delivered."""
    now = now or utcnow()
    with sessions.begin() as session:
        due = [
            (d.id, d.job_id, d.study_uid, d.destination, d.attempts)
            for d in claim_due(session=session, model=ResultDelivery, now=now)
        ]
    delivered = 0
    destinations = settings.destinations
    reports: dict[tuple[int, str], Report] = {}  # a study bound for two destinations is built once
    for row_id, job_id, study_uid, name, attempts in due:
        outcome: dict[str, Any] = {}
        try:
            destination = destinations.get(name)
            if destination is None:
                raise DeliveryError(f"no destination {name!r} in BRAINSCAN_DICOM_DESTINATIONS")
            report = reports.get((job_id, study_uid))
            if report is None:
                with sessions() as session:
                    report = reports[job_id, study_uid] = study_report(
                        session, job_id=job_id, study_uid=study_uid
                    )
            send(destination, report.objects, calling_ae=settings.dicom_ae_title)
            outcome = {"verdict": report.verdict, "objects": len(report.objects)}
            error: DeliveryError | None = None
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a bug or an odd answer must not stop the other deliveries
            log.exception("job %s: result delivery %s failed", job_id, row_id)
            error = DeliveryError(f"{type(exc).__name__}: {exc}")
        with sessions.begin() as session:
            if error is None:
                mark_sent(session=session, model=ResultDelivery, row_id=row_id, now=utcnow(), **outcome)
                delivered += 1
                continue
            wait = record_failure(
                session=session,
                model=ResultDelivery,
                row_id=row_id,
                attempts=attempts,
                error=str(error),
                max_attempts=MAX_ATTEMPTS,
                now=utcnow(),
                permanent=error.permanent,
            )
            log.warning(
                "job %s: results of a study for %s not delivered (%s); %s",
                job_id,
                name,
                error,
                describe_wait(wait),
            )
    return delivered
