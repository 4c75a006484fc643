"""An ensemble (ModelConfig.members > 1): members trained apart, served as one averaging network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.images import square_slices
from training.backend import import_backend

import_backend()

import keras  # noqa: E402

from tests.training.tiny import TINY_NETWORK  # noqa: E402
from training import plots  # noqa: E402
from training.model import ModelConfig, build_model  # noqa: E402
from training.pipeline import save_for_inference  # noqa: E402
from training.train import FitResult, TrainConfig, fit, predict  # noqa: E402

pytestmark = pytest.mark.slow  # fits networks: scripts/test --fast leaves it out


TINY = dataclasses.replace(TINY_NETWORK, members=2)


@pytest.fixture(scope="module")
def trained() -> tuple[FitResult, np.ndarray]:
    x, y = square_slices(96, 0)
    xv, yv = square_slices(32, 1)
    return fit(x, y, xv, yv, model_cfg=TINY, cfg=TrainConfig(epochs=2, batch_size=16, warmup_epochs=0)), xv


def test_an_ensemble_serves_the_mean_of_members_trained_apart(trained: tuple[FitResult, np.ndarray]) -> None:
    result, x = trained
    model, best_epochs = result.model, result.member_best_epochs
    assert len(best_epochs) == 2 and all(1 <= e <= 2 for e in best_epochs)
    members = [model.get_layer(f"member_{i}") for i in range(2)]
    outputs = [np.asarray(m.predict_on_batch(x)).reshape(-1) for m in members]
    assert not np.allclose(members[0].get_weights()[0], members[1].get_weights()[0])  # re-seeded
    assert not np.allclose(outputs[0], outputs[1])
    np.testing.assert_allclose(predict(model, x), (outputs[0] + outputs[1]) / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flip_tta", [False, True])
def test_a_saved_ensemble_loads_as_one_model_with_the_same_probabilities(
    trained: tuple[FitResult, np.ndarray], tmp_path: Path, flip_tta: bool
) -> None:
    import dataclasses

    result, x = trained
    model = result.model
    path = tmp_path / "ensemble.keras"
    save_for_inference(model, dataclasses.replace(TINY, flip_tta=flip_tta), path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(predict(loaded, x), predict(model, x, flip_tta=flip_tta), rtol=1e-5, atol=1e-6)


def test_members_must_be_positive() -> None:
    with pytest.raises(ValueError, match="members"):
        build_model(ModelConfig(members=0))


def test_the_learning_curves_of_an_ensemble_show_every_member(
    trained: tuple[FitResult, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = trained
    histories = result.member_histories
    assert len(histories) == 2 and histories[0] is result.history
    assert all(len(h["val_auc"]) == 2 for h in histories) and histories[0] != histories[1]
    drawn: list[list[str]] = []
    monkeypatch.setattr(
        plots,
        "_save",
        lambda fig, path: drawn.extend([line.get_label() for line in ax.get_lines()] for ax in fig.axes),
    )
    plots.learning_curves(histories, tmp_path / "curves.png")
    expected = ["member 1 train", "member 1 validation", "member 2 train", "member 2 validation"]
    assert drawn == [expected, expected]  # loss, AUC
    drawn.clear()
    plots.learning_curves([result.history], tmp_path / "curves.png")
    assert drawn == [["train", "validation"]] * 2
