"""A trained model's final split, rebuilt from its card: the same images (checked by the card's
data fingerprint), split by its recipe's seed, and its test figures checked equal to the card's,
so that what is added to a card afterwards (a score reference, an out-of-distribution reference,
study figures) is measured on the very parts the model was fitted, tuned and tested on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.crossval import FitTask, final_task
from training.metrics import compute_metrics
from training.prepare import PreparedData, prepare
from training.recipes import Recipe
from training.scorer import Scorer


class RebuildError(Exception):
    """The data or the split are not the ones the card describes."""


@dataclass(frozen=True)
class Rebuilt:
    data: PreparedData
    task: FitTask
    val_probs: np.ndarray
    test_probs: np.ndarray


def rebuild_final_split(scorer: Scorer, roots: Sequence[Path], *, exclude: Sequence[str] = ()) -> Rebuilt:
    """The model's training data prepared again, its final split drawn again, and its validation
    and test parts scored; RebuildError when the fingerprint or the test figures differ."""
    card = scorer.card
    recipe = Recipe.from_dict(card.recipe)
    data = prepare(roots, recipe, exclude=exclude)
    if data.fingerprint != card.data["fingerprint"]:
        raise RebuildError("these are not the images the model was trained on (the data fingerprints differ)")
    task = final_task(data, recipe)
    x, y = data.loaded.inputs, data.loaded.labels
    test_probs = scorer.score_arrays(x[task.test])
    found = compute_metrics(y[task.test], test_probs, card.threshold).to_dict()
    stored = card.metrics["test"]
    if any(found[k] != stored[k] for k in ("tp", "fp", "tn", "fn")):
        raise RebuildError(f"the rebuilt test split scores {found}, not the card's {stored}")
    return Rebuilt(data, task, scorer.score_arrays(x[task.val]), test_probs)
