"""Score shift measured on real jobs, with a model trained without lgg-flair: its slices are
`shifted`, a sample of a source it trained on is `ok`, for three samples each (the batches'
histograms in SQL against the card's held-out reference, and the share of slices out of
distribution, per image by training.ood)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from brainscan.testing import Service
from db.batches import job_score_histogram
from tests.conftest import UNSEEN_LGG_MODEL
from training.drift import drift
from training.scorer import Scorer

pytestmark = pytest.mark.data
SAMPLE = 200


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    from training.backend import import_backend

    import_backend()
    return Scorer.load(UNSEEN_LGG_MODEL)


def _sample(source: Path, dest: Path, seed: int) -> Path:
    files = sorted(p for p in source.rglob("*.jpg"))
    for i, path in enumerate(random.Random(seed).sample(files, SAMPLE)):
        target = dest / path.parent.name / f"{i:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return dest


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_unseen_source_is_shifted_and_a_seen_one_ok(
    embedded: Service, scorer: Scorer, shared_data: Path, tmp_path: Path, seed: int
) -> None:
    found = {}
    for name, expected in (("lgg-flair", "shifted"), ("kaggle-4class-train", "ok")):
        folder = _sample(shared_data / name, tmp_path / name, seed)
        job_id = embedded.run_here(folder, scorer=scorer, batch_size=64)
        with embedded.sessions()() as session:
            counts, flagged, beyond = job_score_histogram(session=session, job_id=job_id)
        found[name] = drift(scorer.card.reference, counts, flagged, beyond)
        assert found[name]["status"] == expected, found[name]
        assert found[name]["images"] >= SAMPLE - 2  # lgg-flair holds two blank slices
    assert found["lgg-flair"]["psi"] > 0.25 > 0.1 > found["kaggle-4class-train"]["psi"]
    # slices unlike the training images (training.ood): about a third of lgg-flair's, few of 4-class's
    assert (
        found["lgg-flair"]["out_of_distribution"]
        > 0.2
        > 0.05
        > found["kaggle-4class-train"]["out_of_distribution"]
    )
