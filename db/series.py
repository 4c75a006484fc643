"""Series of a job's images: recorded by the planner as it meets them, before their images.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from db.models import Series
from db.sites import active_profile


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


def add_series(
    *, session: Session, job_id: int, series: Sequence[SeriesFound], profiles_of: str | None = None
) -> dict[str, int]:
    """Record series new to the job; returns their ids by series_key (each key once per job).
    `profiles_of`: a model version; each DICOM series with a site takes that site's active profile
    for it (its threshold and the profile's id), where there is one."""
    if not series:
        return {}
    rows = [{"job_id": job_id, **asdict(s), **_site_threshold(session, s, profiles_of)} for s in series]
    inserted = session.execute(insert(Series).returning(Series.series_key, Series.id), rows)
    return {key: id_ for key, id_ in inserted}


def _site_threshold(session: Session, series: SeriesFound, model_version: str | None) -> dict[str, object]:
    profile = (
        active_profile(session=session, site=series.site, model_version=model_version)
        if model_version and series.dicom and series.site
        else None
    )
    if profile is None:
        return {"threshold": None, "site_profile_id": None}
    return {"threshold": profile.threshold, "site_profile_id": profile.id}


def series_thresholds(*, session: Session, job_id: int) -> dict[int, float]:
    """The job's series that took a site's threshold: series id -> threshold."""
    rows = session.execute(
        select(Series.id, Series.threshold).where(Series.job_id == job_id, Series.threshold.is_not(None))
    )
    return {int(series_id): float(threshold) for series_id, threshold in rows if threshold is not None}


def site_thresholds(*, session: Session, job_id: int) -> list[dict[str, object]]:
    """Per site whose profile the job's series took: the threshold, the profile and how many series."""
    rows = session.execute(
        select(Series.site, Series.threshold, Series.site_profile_id, func.count())
        .where(Series.job_id == job_id, Series.threshold.is_not(None))
        .group_by(Series.site, Series.threshold, Series.site_profile_id)
        .order_by(Series.site)
    )
    return [
        {"site": site, "threshold": threshold, "profile": profile, "series": int(n)}
        for site, threshold, profile, n in rows
    ]
