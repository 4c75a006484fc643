"""Studies received over DICOM: each study's open delivery, and which deliveries are stable.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
The listener notes an instance and writes its file in one transaction; closing a delivery is one
conditional UPDATE on the same row, so an instance that arrives while its delivery is closed
either lands before the close (and in that job) or after it (in the next delivery), never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import ReceivedStudy, utcnow


@dataclass(frozen=True, slots=True)
class Delivery:
    """A study's delivery: its instances go to received/<study_uid>/<number>/."""

    study_uid: str
    number: int
    instances: int
    calling_ae: str


def note_instance(*, session: Session, study_uid: str, calling_ae: str) -> int:
    """One more instance of the study, from `calling_ae`: the delivery it belongs to. Takes the
    study's row lock until the caller commits (write the file before committing)."""
    now = utcnow()
    values = {
        "study_uid": study_uid,
        "delivery": 1,
        "open_instances": 1,
        "instances": 1,
        "duplicates": 0,
        "calling_ae": calling_ae,
        "first_at": now,
        "last_at": now,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(ReceivedStudy).values(values)
    stmt = insert.on_conflict_do_update(
        index_elements=[ReceivedStudy.study_uid],
        set_={
            "open_instances": ReceivedStudy.open_instances + 1,
            "instances": ReceivedStudy.instances + 1,
            "calling_ae": calling_ae,
            "last_at": now,
        },
    ).returning(ReceivedStudy.delivery)
    return int(session.execute(stmt).scalar_one())


def note_duplicate(*, session: Session, study_uid: str) -> None:
    """An instance received before was sent again: counted, nothing else changes."""
    session.execute(
        update(ReceivedStudy)
        .where(ReceivedStudy.study_uid == study_uid)
        .values(duplicates=ReceivedStudy.duplicates + 1)
    )


def stable_deliveries(*, session: Session, quiet_since: datetime) -> list[Delivery]:
    """Open deliveries with instances and none received since `quiet_since`."""
    rows = session.execute(
        select(
            ReceivedStudy.study_uid,
            ReceivedStudy.delivery,
            ReceivedStudy.open_instances,
            ReceivedStudy.calling_ae,
        ).where(ReceivedStudy.open_instances > 0, ReceivedStudy.last_at < quiet_since)
    )
    return [Delivery(*row) for row in rows]


def close_delivery(*, session: Session, delivery: Delivery, quiet_since: datetime) -> bool:
    """Close the delivery (the next instance opens the next one); False when an instance came
    meanwhile or another sweep closed it first: then make no job of it."""
    closed = session.execute(
        update(ReceivedStudy)
        .where(
            ReceivedStudy.study_uid == delivery.study_uid,
            ReceivedStudy.delivery == delivery.number,
            ReceivedStudy.open_instances > 0,
            ReceivedStudy.last_at < quiet_since,
        )
        .values(delivery=ReceivedStudy.delivery + 1, open_instances=0)
        .returning(ReceivedStudy.id)
    ).first()
    return closed is not None


def note_job(*, session: Session, study_uid: str, job_id: int) -> None:
    """The job made of the study's last closed delivery."""
    session.execute(
        update(ReceivedStudy).where(ReceivedStudy.study_uid == study_uid).values(last_job_id=job_id)
    )


def received_study(*, session: Session, study_uid: str) -> ReceivedStudy | None:
    return session.scalars(select(ReceivedStudy).where(ReceivedStudy.study_uid == study_uid)).first()
