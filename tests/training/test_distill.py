"""TrainConfig.distill: the student learns the teacher's scores of the very slices it is shown."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.images import square_slices
from training.backend import import_backend

import_backend()

import keras  # noqa: E402

from tests.training.tiny import TINY_NETWORK  # noqa: E402
from training.augment import AugmentedBatches  # noqa: E402
from training.metrics import compute_metrics  # noqa: E402
from training.model import build_model  # noqa: E402
from training.train import TrainConfig, _fit_single, fit, predict  # noqa: E402

pytestmark = pytest.mark.slow  # fits networks: scripts/test --fast leaves it out


BASE = TrainConfig(
    epochs=3, batch_size=16, warmup_epochs=0, patience=5, balance_classes=False, label_smoothing=0.0
)


def test_targets_blend_the_label_with_the_teachers_score_of_the_augmented_batch() -> None:
    x, y = square_slices(8, 0)
    seen: list[np.ndarray] = []

    def teacher(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return batch[:, 0, 0, 0].astype(np.float32) / 255.0  # a score that depends on the pixels

    plain = AugmentedBatches(x, y, batch_size=8, strength=1.0, seed=3)
    taught = AugmentedBatches(x, y, batch_size=8, strength=1.0, seed=3, teacher=teacher, teacher_weight=0.25)
    xb, yb, _ = plain[0]
    xt, yt, _ = taught[0]
    np.testing.assert_array_equal(xt, xb)  # the teacher changes targets, never the images
    np.testing.assert_array_equal(seen[0], xt)  # and scores the augmented view the student sees
    np.testing.assert_allclose(yt, 0.75 * yb + 0.25 * xt[:, 0, 0, 0] / 255.0, rtol=1e-6)


def _square_reader() -> keras.Model:
    """A confident teacher that knows where the square is: P(tumour) from the patch's mean."""
    inputs = keras.Input((32, 32, 1), dtype="uint8")
    patch = keras.layers.Cropping2D(((10, 12), (12, 10)))(keras.ops.cast(inputs, "float32"))
    mean = keras.layers.GlobalAveragePooling2D()(patch)
    score = keras.layers.Dense(1, activation="sigmoid")(mean)
    model = keras.Model(inputs, score)
    model.layers[-1].set_weights([np.array([[0.1]]), np.array([-12.0])])  # 50% at mean 120
    return model


def test_a_student_follows_its_teacher_not_the_labels() -> None:
    x, y = square_slices(96, 0)
    xv, yv = square_slices(48, 1)
    teacher = _square_reader()
    assert compute_metrics(yv, predict(teacher, xv), 0.5).auc == 1.0
    wrong = 1 - y  # every training label inverted: only the teacher can tell the student the truth
    runs = {
        w: _fit_single(
            x,
            wrong,
            xv,
            yv,
            model_cfg=TINY_NETWORK,
            cfg=dataclasses.replace(BASE, distill=w),
            prefix="",
            loader_threads=1,
            sources=None,
            teacher=teacher,
        )
        for w in (0.0, 1.0)
    }
    auc = {w: compute_metrics(yv, predict(r.model, xv), 0.5).auc for w, r in runs.items()}
    assert auc[1.0] > 0.9  # learnt the teacher's ranking
    # From the inverted labels alone it learns the inverse; early stopping keeps its least-bad
    # epoch, which is no better than chance.
    assert auc[0.0] < 0.65


def test_fit_trains_the_teacher_first_and_returns_one_network() -> None:
    x, y = square_slices(64, 0)
    xv, yv = square_slices(32, 1)
    cfg = dataclasses.replace(BASE, epochs=2, distill=0.5, distill_members=2)
    result = fit(x, y, xv, yv, model_cfg=TINY_NETWORK, cfg=cfg, loader_threads=1)
    assert result.model.count_params() == build_model(TINY_NETWORK).count_params()
    assert len(result.teacher_best_epochs) == 2 and result.member_best_epochs == ()
    assert len(result.history["loss"]) >= 1
    with pytest.raises(ValueError, match="distill_members"):
        fit(x, y, xv, yv, model_cfg=dataclasses.replace(TINY_NETWORK, members=2), cfg=cfg, loader_threads=1)
    with pytest.raises(ValueError, match="needs a member"):
        fit(
            x,
            y,
            xv,
            yv,
            model_cfg=TINY_NETWORK,
            cfg=dataclasses.replace(cfg, distill_members=0),
            loader_threads=1,
        )
