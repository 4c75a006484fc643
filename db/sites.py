"""Sites: where images come from (a DICOM file's manufacturer and station, else the job's top folder),
and each site's recent score histogram, against which its score shift is measured.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.batches import SCORE_BINS, score_bin
from db.models import ImageResult, Job, Series


def site_histograms(
    *, session: Session, model_version: str, since: datetime
) -> dict[str, tuple[list[int], int]]:
    """Per site, the scores of images scored since `since` by jobs of `model_version`, binned, and
    how many were flagged."""
    bin_of = score_bin(session)
    flagged = func.sum(case((ImageResult.flagged.is_(True), 1), else_=0))
    rows = session.execute(
        select(Series.site, bin_of, func.count(), flagged)
        .join(ImageResult, ImageResult.series_id == Series.id)
        .join(Job, Job.id == Series.job_id)
        .where(
            Job.model_version == model_version, ImageResult.status == "scored", ImageResult.scored_at >= since
        )
        .group_by(Series.site, bin_of)
    ).all()
    sites: dict[str, tuple[list[int], int]] = {}
    for site, index, n, n_flagged in rows:
        counts, total_flagged = sites.setdefault(site or "(unknown)", ([0] * SCORE_BINS, 0))
        counts[int(index)] += int(n)
        sites[site or "(unknown)"] = (counts, total_flagged + int(n_flagged or 0))
    return sites
