"""Scorer.score_arrays: the frozen serving graph scores as Keras does, and falls back to Keras."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.conftest import SHIPPED_MODEL
from training.backend import import_backend
from training.scorer import Scorer

import_backend()


@pytest.fixture(scope="module")
def shipped() -> Scorer:
    return Scorer.load(SHIPPED_MODEL)


def _slices(n: int, size: int) -> np.ndarray:
    """Head-like inputs: a bright disc with a brighter spot, on black, so BN statistics matter."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        head = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * rng.uniform(0.3, 0.45)) ** 2
        spot = (yy - rng.integers(40, size - 40)) ** 2 + (xx - rng.integers(40, size - 40)) ** 2 < 100
        out[i] = np.clip(head * rng.normal(100, 20, head.shape) + spot * head * 120, 0, 255)
    return out


def test_the_frozen_graph_scores_as_keras_does_including_a_partial_last_batch(shipped: Scorer) -> None:
    x = _slices(70, shipped.spec.size)  # a full batch of 64 and a padded one of 6
    keras = shipped.model.predict_on_batch  # type: ignore[attr-defined]
    keras_scores = np.concatenate([np.asarray(keras(x[i : i + 64, ..., None])).reshape(-1) for i in (0, 64)])
    scores = shipped.score_arrays(x)
    predictor = shipped._predictors[(64, shipped.spec.size, shipped.spec.size, 1)]
    assert predictor != keras  # it is the frozen one
    assert keras_scores.std() > 0.01  # the inputs spread the scores, so agreement means something
    np.testing.assert_allclose(scores, keras_scores, rtol=1e-5, atol=1e-6)


def test_frozen_false_scores_through_keras(shipped: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    keras_path = Scorer(shipped.model, shipped.card, frozen=False)
    x = _slices(3, shipped.spec.size)
    batches: list[int] = []
    through_keras = shipped.model.predict_on_batch  # type: ignore[attr-defined]
    monkeypatch.setattr(
        shipped.model, "predict_on_batch", lambda b: batches.append(len(b)) or through_keras(b)
    )
    np.testing.assert_allclose(keras_path.score_arrays(x), shipped.score_arrays(x), rtol=1e-5, atol=1e-6)
    assert batches == [64]  # the one padded batch, through Keras; the frozen scorer never called it


def test_a_graph_that_cannot_be_frozen_still_scores_and_says_why(
    shipped: Scorer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import training.scorer

    def refuse(model: object, batch_shape: tuple[int, ...]) -> None:
        raise ValueError("no constant folding today")

    monkeypatch.setattr(training.scorer, "frozen_predictor", refuse)
    fresh = Scorer(shipped.model, shipped.card)
    x = _slices(2, shipped.spec.size)
    with caplog.at_level(logging.WARNING, logger="training.scorer"):
        scores = fresh.score_arrays(x)
    np.testing.assert_allclose(scores, shipped.score_arrays(x), rtol=1e-5, atol=1e-6)
    assert "could not be frozen: ValueError: no constant folding today" in caplog.text


def test_inputs_that_are_not_preprocessed_uint8_are_refused(shipped: Scorer) -> None:
    with pytest.raises(ValueError, match="uint8, not float32"):
        shipped.score_arrays(np.zeros((1, shipped.spec.size, shipped.spec.size), np.float32))
