"""Sites: where images come from (a DICOM file's manufacturer and station, else the job's top folder);
each site's recent score histogram, against which its score shift is measured; and its profile,
a threshold of its own set from its reviewed images.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.batches import SCORE_BINS, score_bin
from db.models import ImageResult, Job, Review, Series, SiteProfile, utcnow
from db.progress import count_where


def site_histograms(
    *, session: Session, model_version: str, since: datetime
) -> dict[str, tuple[list[int], int, int | None]]:
    """Per site, the scores of images scored since `since` by jobs of `model_version`, binned, how
    many were flagged, and how many were out of distribution (None: not measured)."""
    bin_of = score_bin(session)
    beyond = ImageResult.out_of_distribution
    rows = session.execute(
        select(
            Series.site,
            bin_of,
            func.count(),
            count_where(ImageResult.flagged.is_(True)),
            count_where(beyond.is_(True)),
            count_where(beyond.is_not(None)),
        )
        .join(ImageResult, ImageResult.series_id == Series.id)
        .join(Job, Job.id == Series.job_id)
        .where(
            Job.model_version == model_version, ImageResult.status == "scored", ImageResult.scored_at >= since
        )
        .group_by(Series.site, bin_of)
    ).all()
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * SCORE_BINS)
    flagged: dict[str, int] = defaultdict(int)
    ood: dict[str, int | None] = defaultdict(lambda: None)
    for site, index, n, n_flagged, n_beyond, n_measured in rows:
        key = site or "(unknown)"
        counts[key][int(index)] += int(n)
        flagged[key] += int(n_flagged)
        if n_measured:
            ood[key] = (ood[key] or 0) + int(n_beyond)
    return {site: (counts[site], flagged[site], ood[site]) for site in counts}


def active_profile(*, session: Session, site: str, model_version: str) -> SiteProfile | None:
    """The site's threshold in force for that model, or None (the model's own applies)."""
    return session.scalars(
        select(SiteProfile).where(
            SiteProfile.site == site, SiteProfile.model_version == model_version, SiteProfile.active.is_(True)
        )
    ).first()


def set_profile(
    *, session: Session, site: str, model_version: str, threshold: float, actor: str, evidence: dict[str, Any]
) -> SiteProfile:
    """A new version of the site's profile, retiring the one in force."""
    clear_profile(session=session, site=site, model_version=model_version)
    profile = SiteProfile(
        site=site, model_version=model_version, threshold=threshold, created_by=actor, evidence=evidence
    )
    session.add(profile)
    session.flush()
    return profile


def clear_profile(*, session: Session, site: str, model_version: str) -> SiteProfile | None:
    """Retire the profile in force (the model's threshold applies again); returns it, or None."""
    profile = active_profile(session=session, site=site, model_version=model_version)
    if profile is not None:
        profile.active, profile.retired_at = False, utcnow()
    return profile


def profile_history(*, session: Session, site: str) -> list[SiteProfile]:
    """Every version of the site's profiles, newest first."""
    return list(
        session.scalars(select(SiteProfile).where(SiteProfile.site == site).order_by(SiteProfile.id.desc()))
    )


def reviewed_scores(*, session: Session, site: str, model_version: str) -> list[tuple[int, float]]:
    """(label, score) of the site's reviewed images scored by that model (tumour 1, no tumour 0)."""
    rows = session.execute(
        select(Review.verdict, ImageResult.probability)
        .join(ImageResult, ImageResult.id == Review.result_id)
        .join(Series, Series.id == ImageResult.series_id)
        .join(Job, Job.id == ImageResult.job_id)
        .where(Series.site == site, Job.model_version == model_version, Review.verdict != "unsure")
    ).all()
    return [(1 if verdict == "tumour" else 0, float(p)) for verdict, p in rows if p is not None]
