"""Out of distribution per image (training.ood): the fit, the features from the scoring pass, the
scorer's distances, and the real figures of a model that never saw lgg-flair."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHIPPED_MODEL, UNSEEN_LGG_MODEL
from tests.images import create_random_slice, square_slices
from training.backend import import_backend

import_backend()

from tests.training.tiny import TINY  # noqa: E402
from training.card import card_path_for  # noqa: E402
from training.model import build_model  # noqa: E402
from training.ood import FeatureReference, fit_reference, reference_path_for, with_features  # noqa: E402
from training.scorer import ModelError, Scorer  # noqa: E402


def test_the_fit_puts_the_threshold_at_the_quantile_and_far_points_beyond() -> None:
    rng = np.random.default_rng(0)
    centres = np.zeros((2, 16))
    centres[0, 0], centres[1, 1] = 1.0, 1.0
    labels = rng.integers(0, 2, 4000)
    train = centres[labels] + rng.normal(0, 0.05, (4000, 16))
    validation = centres[rng.integers(0, 2, 2000)] + rng.normal(0, 0.05, (2000, 16))
    reference = fit_reference(train, labels, validation, quantile=0.95)
    assert np.mean(reference.distances(validation) > reference.threshold) == pytest.approx(0.05, abs=0.002)
    fresh = centres[rng.integers(0, 2, 2000)] + rng.normal(0, 0.05, (2000, 16))
    assert np.mean(reference.distances(fresh) > reference.threshold) == pytest.approx(0.05, abs=0.02)
    elsewhere = np.full((100, 16), 0.25) + rng.normal(0, 0.05, (100, 16))  # between and off both
    assert np.all(reference.distances(elsewhere) > reference.threshold)
    scaled = train[:50] * 7.0  # features are compared by direction, not length
    assert np.allclose(reference.distances(scaled), reference.distances(train[:50]))


def test_a_reference_survives_a_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    reference = fit_reference(rng.normal(size=(300, 8)), rng.integers(0, 2, 300), rng.normal(size=(100, 8)))
    reference.save(tmp_path / "r.ood.npz")
    back = FeatureReference.load(tmp_path / "r.ood.npz")
    points = rng.normal(size=(20, 8))
    assert np.allclose(back.distances(points), reference.distances(points), rtol=1e-5)
    assert back.threshold == reference.threshold and back.quantile == reference.quantile


@pytest.mark.parametrize("members", [1, 2])
def test_the_features_come_from_the_scoring_pass_and_leave_the_score_unchanged(members: int) -> None:
    import dataclasses

    network = dataclasses.replace(TINY.network, members=members)
    model = build_model(network, TINY.input.size)
    x, _ = square_slices(8, 0)  # 32 px: TINY's input
    probability, features = with_features(model).predict_on_batch(x)
    assert np.allclose(np.asarray(probability), np.asarray(model.predict_on_batch(x)), atol=1e-6)
    assert np.asarray(features).shape == (8, TINY.network.widths[-1] * members)


def test_the_scorer_gives_each_slice_its_distance_the_same_frozen_or_not() -> None:
    scorer = Scorer.load(SHIPPED_MODEL)
    assert scorer.ood is not None and scorer.ood.threshold == scorer.card.ood["threshold"]
    side = scorer.spec.size
    x = np.stack([create_random_slice(side, seed=i, lesion=i % 2 == 1) for i in range(10)])[..., None]
    probs, distances = scorer.score_and_distance(x)
    assert distances is not None and distances.shape == (10,) and np.all(distances > 0)
    keras_path = Scorer(scorer.model, scorer.card, ood=scorer.ood, frozen=False)
    again, keras_distances = keras_path.score_and_distance(x)
    assert np.allclose(probs, again, atol=1e-5) and np.allclose(distances, keras_distances, rtol=1e-3)
    assert np.allclose(Scorer(scorer.model, scorer.card).score_arrays(x), probs, atol=1e-6)  # no reference


def test_a_card_whose_reference_is_missing_or_altered_is_refused(tmp_path: Path) -> None:
    for name in (
        SHIPPED_MODEL.name,
        card_path_for(SHIPPED_MODEL).name,
        reference_path_for(SHIPPED_MODEL).name,
    ):
        shutil.copy(SHIPPED_MODEL.with_name(name), tmp_path / name)
    copy = tmp_path / SHIPPED_MODEL.name
    reference = reference_path_for(copy)
    stored = reference.read_bytes()
    reference.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))
    with pytest.raises(ModelError, match="not the reference the card describes"):
        Scorer.load(copy)
    reference.unlink()
    with pytest.raises(ModelError, match="reference that is missing"):
        Scorer.load(copy)


@pytest.mark.data
def test_a_source_the_model_never_saw_lies_out_of_distribution(shared_data: Path) -> None:
    """The model trained without lgg-flair: a third of its FLAIR slices are beyond the threshold,
    few of a source it trained on (drawn from all of it: its training images included)."""
    scorer = Scorer.load(UNSEEN_LGG_MODEL)
    shares = {}
    for source in ("lgg-flair", "kaggle-4class-train"):
        files = random.Random(0).sample(sorted((shared_data / source).rglob("*.jpg")), 150)
        results = list(scorer.iter_scores(files))
        beyond = [r.out_of_distribution for r in results if r.probability is not None]
        shares[source] = float(np.mean(beyond))
        assert all(r.ood_distance is not None for r in results if r.probability is not None)
    print(json.dumps(shares))
    assert shares["lgg-flair"] > 0.2 and shares["kaggle-4class-train"] < 0.05
