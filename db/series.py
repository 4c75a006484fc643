"""Series of a job's images: recorded by the planner as it meets them, before their images.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import insert
from sqlalchemy.orm import Session

from db.models import Series


@dataclass(frozen=True, slots=True)
class SeriesFound:
    """A series as the planner describes it: keys and what its headers say, never a name."""

    study_key: str  # StudyInstanceUID, or the folder's path for images outside DICOM
    series_key: str  # SeriesInstanceUID, or the folder's path
    dicom: bool
    patient_key: str | None = None  # keyed hash of PatientID (training.dicom_header.patient_key)
    description: str = ""
    modality: str = ""
    sequence: str = ""
    plane: str = ""
    site: str = ""
    image_type: str = ""
    not_assessed: str | None = None  # why the model is not fit for this series (a localiser...)


def add_series(*, session: Session, job_id: int, series: Sequence[SeriesFound]) -> dict[str, int]:
    """Record series new to the job; returns their ids by series_key (each key once per job)."""
    if not series:
        return {}
    rows = [{"job_id": job_id, **asdict(s)} for s in series]
    inserted = session.execute(insert(Series).returning(Series.series_key, Series.id), rows)
    return {key: id_ for key, id_ in inserted}
