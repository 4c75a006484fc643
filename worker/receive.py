"""The DICOM listener: modalities and PACS send studies by C-STORE; each becomes a job when stable.

pynetdicom's storage SCP (and C-ECHO) on `dicom_host:dicom_port` as `dicom_ae_title`, accepting
calling AE titles in `dicom_callers` (empty: any) from addresses in `dicom_addresses` ("*": any).
Each instance is written under `received_dir/<StudyInstanceUID>/<delivery>/<SeriesInstanceUID>/
<SOPInstanceUID>.dcm` (UIDs checked, the file written aside then renamed), in the transaction that
counts it (db.received). An instance received before is acknowledged and changes nothing. A
sweep makes each study whose open delivery has had no new instance for `dicom_stable_seconds` a
job (one per study; an instance arriving after that opens the next delivery, which becomes a
follow-up job of the new instances only), submitted as `dicom:<calling AE>` without a threshold
of its own (site profiles apply per series) and audited.

Nothing of the patient is logged: UIDs are not names, and only counts go to the log.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from brainscan.disk import QuotaGauge
from brainscan.settings import Settings
from db.audit import record_event
from db.jobs import create_job
from db.model_versions import current_model_version
from db.models import utcnow
from db.received import Delivery, close_delivery, note_duplicate, note_instance, note_job, stable_deliveries

log = logging.getLogger(__name__)
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # a DICOM UID: digits and dots, at most 64 characters
SUCCESS, NOT_AUTHORISED, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0x0000, 0x0124, 0xC000, 0xA700
SWEEP_EVERY = 1.0  # seconds between looks for stable studies


def valid_uid(value: object) -> str | None:
    """The UID as a string when it is one (safe as a file name), else None."""
    text = str(value or "").strip()
    return text if len(text) <= 64 and UID.match(text) else None


def write_file(data: bytes, target: Path) -> None:
    """Write `data` aside in target's folder and rename it into place: a reader never sees half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


class AlreadyStored(Exception):
    """The instance was stored meanwhile, by another association sending it at the same time."""


class Receiver:
    """The listener's state: where it writes, whom it accepts, and the database it counts in."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.root = settings.received_dir.resolve()
        self.callers = {c.strip() for c in settings.dicom_callers.split(",") if c.strip()}
        self.addresses = {a.strip() for a in settings.dicom_addresses.split(",") if a.strip()}
        self.quota = QuotaGauge(settings)

    def allowed(self, address: str, calling_ae: str) -> bool:
        """Whether this client may send: its address and AE title on the allow-lists."""
        address_ok = "*" in self.addresses or address in self.addresses
        return address_ok and (not self.callers or calling_ae in self.callers)

    def existing(self, study: str, series: str, sop: str) -> Path | None:
        """The file of this instance if any delivery of the study holds it already."""
        study_dir = self.root / study
        if not study_dir.is_dir():
            return None
        return next((p for p in study_dir.glob(f"*/{series}/{sop}.dcm") if p.is_file()), None)

    def store(self, dataset: Any, encoded: Callable[[], bytes], address: str, calling_ae: str) -> int:
        """Write one received instance (`encoded()`: the file's bytes, as the peer encoded them:
        nothing is decoded and written again); the C-STORE status to answer."""
        if not self.allowed(address, calling_ae):
            log.warning("C-STORE refused: caller %r from %s is not on the allow-list", calling_ae, address)
            return NOT_AUTHORISED
        study = valid_uid(dataset.get("StudyInstanceUID"))
        series = valid_uid(dataset.get("SeriesInstanceUID"))
        sop = valid_uid(dataset.get("SOPInstanceUID"))
        if study is None or series is None or sop is None:
            return CANNOT_UNDERSTAND
        if self.existing(study, series, sop) is not None:  # a resend: no need to read the bytes
            return self._duplicate(study)
        data = encoded()
        if self.quota.full(len(data)):  # the sender keeps the study and sends it again later
            log.warning("C-STORE refused: the disk quota (BRAINSCAN_DISK_QUOTA_GB) is full")
            return OUT_OF_RESOURCES
        try:
            with self.sessions.begin() as session:  # the count commits with the file, or neither
                delivery = note_instance(session=session, study_uid=study, calling_ae=calling_ae)
                # note_instance holds the study's lock: another association storing this very
                # instance at the same time has committed its file by now, or waits for ours
                if self.existing(study, series, sop) is not None:
                    raise AlreadyStored
                write_file(data, self.root / study / str(delivery) / series / f"{sop}.dcm")
        except AlreadyStored:  # rolled back: counted as a duplicate, not as an instance
            return self._duplicate(study)
        except OSError as exc:
            log.error("C-STORE failed: cannot write the instance: %s", exc.strerror or exc)
            return OUT_OF_RESOURCES
        self.quota.wrote(len(data))
        return SUCCESS

    def _duplicate(self, study: str) -> int:
        with self.sessions.begin() as session:
            note_duplicate(session=session, study_uid=study)
        return SUCCESS

    def sweep(self, submit: Callable[[int], object]) -> list[int]:
        """Make a job of every stable delivery; `submit` sends each job to the planner after its
        commit. Returns the jobs made."""
        quiet_since = utcnow() - timedelta(seconds=self.settings.dicom_stable_seconds)
        with self.sessions() as session:
            found = stable_deliveries(session=session, quiet_since=quiet_since)
        made = []
        for delivery in found:
            job_id = self._job_of(delivery, quiet_since)
            if job_id is not None:
                submit(job_id)
                made.append(job_id)
        return made

    def _job_of(self, delivery: Delivery, quiet_since: Any) -> int | None:
        folder = self.root / delivery.study_uid / str(delivery.number)
        with self.sessions.begin() as session:
            model = current_model_version(session=session)
            if model is None:  # no worker has registered a model yet: the study waits for one
                return None
            if not close_delivery(session=session, delivery=delivery, quiet_since=quiet_since):
                return None
            actor = f"dicom:{delivery.calling_ae}"
            job, _ = create_job(
                session=session,
                source=f"received/{delivery.study_uid}/{delivery.number}",
                source_kind="folder",
                source_path=str(folder),
                submitted_by=actor,
                model_version=model.version,
                threshold=self.settings.threshold if self.settings.threshold is not None else model.threshold,
                batch_size=self.settings.batch_size,
                site_profiles=True,
                return_to=",".join(self.settings.destinations),
            )
            note_job(session=session, study_uid=delivery.study_uid, job_id=job.id)
            record_event(
                session=session,
                actor=actor,
                action="job.submit",
                job_id=job.id,
                detail={"source": "dicom", "delivery": delivery.number, "instances": delivery.instances},
            )
            job_id = job.id
        log.info(
            "job %s: a received study's delivery %s (%d instances)",
            job_id,
            delivery.number,
            delivery.instances,
        )
        return job_id


RECEIVED_SYNTAXES = [  # the transfer syntaxes brainscan decodes (training/dicom.py); uncompressed first
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]


def serve(
    settings: Settings,
    sessions: sessionmaker[Session],
    submit: Callable[[int], object],
    *,
    stop: threading.Event | None = None,
    ready: Callable[[int], object] = lambda port: None,
) -> Receiver:
    """Run the listener until `stop` is set (for ever without one): the SCP in pynetdicom's
    threads, the stability sweep in this one. `ready(port)` is called once it listens."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    receiver = Receiver(settings, sessions)
    ae = AE(ae_title=settings.dicom_ae_title)
    ae.maximum_pdu_size = 0  # no limit: a sender may pass a slice in a few large PDUs, not many 16 KB ones
    for context in AllStoragePresentationContexts:  # kept as sent: planning and scoring decode them
        ae.add_supported_context(str(context.abstract_syntax), RECEIVED_SYNTAXES)
    ae.add_supported_context(Verification)
    if receiver.callers:
        ae.require_calling_aet = sorted(receiver.callers)

    def on_store(event: Any) -> int:
        requestor = event.assoc.requestor
        return receiver.store(event.dataset, event.encoded_dataset, requestor.address, requestor.ae_title)

    def on_echo(event: Any) -> int:
        requestor = event.assoc.requestor
        return SUCCESS if receiver.allowed(requestor.address, requestor.ae_title) else NOT_AUTHORISED

    server = ae.start_server(
        (settings.dicom_host, settings.dicom_port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_C_ECHO, on_echo)],
    )
    assert server is not None  # block=False returns the running server
    port = int(server.server_address[1])
    log.info("DICOM listener %s on %s:%d", settings.dicom_ae_title, settings.dicom_host, port)
    ready(port)
    stop = stop or threading.Event()
    try:
        while not stop.wait(SWEEP_EVERY):
            try:
                receiver.sweep(submit)
            except Exception:  # a database hiccup: the next sweep tries again
                log.exception("DICOM listener: the stability sweep failed; trying again")
    finally:
        server.shutdown()
        ae.shutdown()
    return receiver
