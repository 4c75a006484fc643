"""An ensemble (the network's members > 1): members trained apart, served as one averaging network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.images import square_slices
from training.backend import import_backend

import_backend()

import keras  # noqa: E402

from tests.training.tiny import TINY, fit_tiny  # noqa: E402
from training import plots  # noqa: E402
from training.model import build_model  # noqa: E402
from training.pipeline import save_for_inference  # noqa: E402
from training.train import FitResult, predict  # noqa: E402

pytestmark = pytest.mark.slow  # fits networks: scripts/test --fast leaves it out


@pytest.fixture(scope="module")
def trained() -> tuple[FitResult, np.ndarray]:
    x, y = square_slices(96, 0)
    xv, yv = square_slices(32, 1)
    return fit_tiny(x, y, xv, yv, "members=2"), xv


def test_an_ensemble_serves_the_mean_of_members_trained_apart(trained: tuple[FitResult, np.ndarray]) -> None:
    result, x = trained
    model, best_epochs = result.model, result.member_best_epochs
    assert len(best_epochs) == 2 and all(1 <= e <= 2 for e in best_epochs)
    members = [model.get_layer(f"member_{i}") for i in range(2)]
    outputs = [np.asarray(m.predict_on_batch(x)).reshape(-1) for m in members]
    assert not np.allclose(members[0].get_weights()[0], members[1].get_weights()[0])  # re-seeded
    assert not np.allclose(outputs[0], outputs[1])
    np.testing.assert_allclose(predict(model, x), (outputs[0] + outputs[1]) / 2, rtol=1e-5, atol=1e-6)


def test_a_saved_ensemble_loads_as_one_model_with_the_same_probabilities(
    trained: tuple[FitResult, np.ndarray], tmp_path: Path
) -> None:
    result, x = trained
    path = tmp_path / "ensemble.keras"
    save_for_inference(result.model, TINY.with_settings(("members=2",)), path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(predict(loaded, x), predict(result.model, x), rtol=1e-5, atol=1e-6)


def test_members_must_be_positive() -> None:
    with pytest.raises(ValueError, match="members"):
        dataclasses.replace(TINY.network, members=0)
    assert (
        build_model(TINY.network, 32).count_params() * 2
        == build_model(dataclasses.replace(TINY.network, members=2), 32).count_params()
    )


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
