"""keep_last: every epoch runs and the last one's weights are kept, none picked by validation."""

from __future__ import annotations

import pytest

from tests.images import square_slices
from tests.training.tiny import fit_tiny

pytestmark = pytest.mark.slow  # fits networks: scripts/test --fast leaves it out


def test_keep_last_runs_every_epoch_where_early_stopping_would_stop() -> None:
    x, y = square_slices(64, 0)
    xv, yv = square_slices(32, 1)  # solved in an epoch or two: validation AUC stops improving
    base = ("epochs=6", "patience=1")
    stopped = fit_tiny(x, y, xv, yv, *base, "keep_last=false", loader_threads=1)
    assert len(stopped.history["loss"]) < 6  # without keep_last the fit stops early ...
    assert stopped.best_epoch == 1 + max(
        range(len(stopped.history["val_auc"])), key=stopped.history["val_auc"].__getitem__
    )
    kept = fit_tiny(x, y, xv, yv, *base, "keep_last=true", loader_threads=1)
    assert len(kept.history["loss"]) == 6 and kept.best_epoch == 6  # ... keep_last never does
    assert len(kept.history["val_auc"]) == 6  # validation still recorded for the learning curves
