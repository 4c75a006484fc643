"""TrainConfig.ema: the weights early stopping validates, keeps and returns are the moving average."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.images import square_slices
from training.backend import import_backend

import_backend()

import keras  # noqa: E402

from tests.training.tiny import TINY_NETWORK  # noqa: E402
from training.train import TrainConfig, fit, predict  # noqa: E402

pytestmark = pytest.mark.slow  # fits networks: scripts/test --fast leaves it out


def test_ema_returns_the_validated_average_and_leaves_training_alone() -> None:
    x, y = square_slices(96, 0, noise=120, square=(40, 140))
    xv, yv = square_slices(48, 1, noise=120, square=(40, 140))
    base = TrainConfig(epochs=3, batch_size=16, warmup_epochs=0, patience=5, balance_classes=False)
    runs = {
        m: fit(x, y, xv, yv, model_cfg=TINY_NETWORK, cfg=dataclasses.replace(base, ema=m), loader_threads=1)
        for m in (0.0, 1e-9, 0.9)
    }
    raw = runs[0.0].model.get_weights()
    # Momentum ~0 averages nothing: the same weights as no average, so the swaps in and out of
    # the model around each validation lose nothing and the optimisation path is untouched.
    for got, want in zip(runs[1e-9].model.get_weights(), raw, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    averaged = runs[0.9]
    assert any(
        not np.allclose(a, b, atol=1e-5) for a, b in zip(averaged.model.get_weights(), raw, strict=True)
    )
    # The weights returned are the ones early stopping scored (its best epoch's average).
    best = averaged.history["val_auc"][averaged.best_epoch - 1]
    assert 0.5 < best < 1.0  # informative: neither chance nor already perfect
    auc = keras.metrics.AUC()  # binned as the fit's val_auc is
    auc.update_state(yv, predict(averaged.model, xv))
    assert float(auc.result()) == pytest.approx(best, abs=1e-4)
