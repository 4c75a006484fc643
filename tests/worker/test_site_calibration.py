"""Site calibration measured: a real job over lgg-flair (FLAIR slices the model of 2026-12-02 never trained
on: its own threshold finds about two thirds of their tumours), half its patients reviewed (the
folder labels standing in for the radiologist), the threshold suggested from those reviews at
recall 0.95 (the service's rule: training.metrics.tune_threshold on db.sites.reviewed_scores),
judged on the other half's patients; three splits."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, select

from brainscan.testing import Service
from db.models import ImageResult, Review
from db.reviews import record_review
from db.sites import reviewed_scores
from tests.conftest import UNSEEN_LGG_MODEL
from training.metrics import compute_metrics, tune_threshold
from training.scorer import Scorer
from training.splits import carve

pytestmark = [pytest.mark.data, pytest.mark.slow]
RECALL_TARGET = 0.95
PATIENT = re.compile(r"(TCGA_.+)_\d+\.jpg$")


def test_a_threshold_from_half_a_site_s_reviews_holds_on_its_other_half(
    embedded: Service, lgg_flair: Path
) -> None:
    from training.backend import import_backend

    import_backend()
    scorer = Scorer.load(UNSEEN_LGG_MODEL)
    job_id = embedded.run_here(lgg_flair, scorer=scorer, batch_size=256)
    with embedded.sessions()() as session:
        rows = [
            r
            for r in session.scalars(select(ImageResult).where(ImageResult.job_id == job_id))
            if r.probability is not None
        ]
    labels = np.array([r.label for r in rows])
    patients = np.unique([PATIENT.search(r.relpath).group(1) for r in rows], return_inverse=True)[1]  # type: ignore[union-attr]
    probs = np.array([r.probability for r in rows])
    for seed in range(3):
        reviewed, held_out = carve(np.arange(len(rows)), labels, patients, 0.5, seed)
        with embedded.sessions().begin() as session:
            session.execute(delete(Review).where(Review.job_id == job_id))
            for i in reviewed:
                verdict = "tumour" if labels[i] == 1 else "no tumour"
                record_review(
                    session=session, job_id=job_id, result_id=rows[i].id, verdict=verdict, reviewer="t"
                )
        with embedded.sessions()() as session:
            scores = reviewed_scores(session=session, site="lgg-flair", model_version=scorer.version)
        assert len(scores) == len(reviewed)
        threshold = tune_threshold(
            np.array([y for y, _ in scores]), np.array([p for _, p in scores]), RECALL_TARGET
        )
        calibrated = compute_metrics(labels[held_out], probs[held_out], threshold)
        own = compute_metrics(labels[held_out], probs[held_out], scorer.threshold)
        print(
            f"split {seed}: {len(reviewed)} reviewed, threshold {threshold:.4f}: held-out recall "
            f"{calibrated.recall:.3f} specificity {calibrated.specificity:.3f} (the model's "
            f"{scorer.threshold:.4f}: {own.recall:.3f} / {own.specificity:.3f})"
        )
        assert calibrated.recall >= 0.9 > own.recall  # the site's recall target, nearly, held out
