"""An ensemble (ModelConfig.members > 1): members trained apart, served as one averaging network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.backend import import_backend

import_backend()

import keras  # noqa: E402

from training.model import ModelConfig, build_model  # noqa: E402
from training.pipeline import save_for_inference  # noqa: E402
from training.train import TrainConfig, fit, predict  # noqa: E402

TINY = ModelConfig(input_size=32, stem_width=8, widths=(8, 16), blocks=(1, 1), members=2)


def _slices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright square in the tumour slices, none in the others: learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, 32, 32, 1), dtype=np.uint8)
    y = np.arange(n) % 2
    x[y == 1, 10:20, 12:22] = 230
    return x, y


@pytest.fixture(scope="module")
def trained() -> tuple[keras.Model, tuple[int, ...], np.ndarray]:
    x, y = _slices(96, 0)
    xv, yv = _slices(32, 1)
    result = fit(x, y, xv, yv, model_cfg=TINY, cfg=TrainConfig(epochs=2, batch_size=16, warmup_epochs=0))
    return result.model, result.member_best_epochs, xv


def test_an_ensemble_serves_the_mean_of_members_trained_apart(
        trained: tuple[keras.Model, tuple[int, ...], np.ndarray]) -> None:
    model, best_epochs, x = trained
    assert len(best_epochs) == 2 and all(1 <= e <= 2 for e in best_epochs)
    members = [model.get_layer(f"member_{i}") for i in range(2)]
    outputs = [np.asarray(m.predict_on_batch(x)).reshape(-1) for m in members]
    assert not np.allclose(members[0].get_weights()[0], members[1].get_weights()[0])  # re-seeded
    assert not np.allclose(outputs[0], outputs[1])
    np.testing.assert_allclose(predict(model, x), (outputs[0] + outputs[1]) / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flip_tta", [False, True])
def test_a_saved_ensemble_loads_as_one_model_with_the_same_probabilities(
        trained: tuple[keras.Model, tuple[int, ...], np.ndarray], tmp_path: Path, flip_tta: bool) -> None:
    import dataclasses

    model, _, x = trained
    path = tmp_path / "ensemble.keras"
    save_for_inference(model, dataclasses.replace(TINY, flip_tta=flip_tta), path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(predict(loaded, x), predict(model, x, flip_tta=flip_tta),
                               rtol=1e-5, atol=1e-6)


def test_members_must_be_positive() -> None:
    with pytest.raises(ValueError, match="members"):
        build_model(ModelConfig(members=0))
