"""The smallest recipe of the shipped recipe's shape: what training tests fit in seconds on 2 cores."""

from __future__ import annotations

from typing import Any

import numpy as np

from training.backend import import_backend

import_backend()

from training.recipes import SHIPPED  # noqa: E402
from training.train import FitResult, fit  # noqa: E402

TINY = SHIPPED.with_settings(
    (
        "size=32",
        "stem_width=8",
        "widths=8,16",
        "blocks=1,1",
        "members=1",
        "epochs=2",
        "batch_size=16",
        "warmup_epochs=0",
    )
)
TINY_NETWORK = TINY.network


def fit_tiny(
    x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, *settings: str, **options: Any
) -> FitResult:
    """TINY, with FIELD=VALUE settings changed, fitted on (x, y), validated on (xv, yv)."""
    recipe = TINY.with_settings(settings)
    return fit(
        x,
        y,
        xv,
        yv,
        network=recipe.network,
        optimisation=recipe.optimisation,
        seed=recipe.policy.seed,
        **options,
    )
