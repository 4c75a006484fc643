"""Score shift: how far a set of images' scores lie from the model's own held-out scores.

The card keeps a reference: the histogram of the model's scores on its held-out split (10 bins of
width 0.1), and the share of them flagged. A job's, a site's or a batch's histogram is compared
with it by the population stability index (PSI = sum over bins of (a - e) * ln(a / e), a and e
the two shares per bin), the usual measure of a shifted score distribution: under 0.1 `ok`, 0.1
to 0.25 `watch`, above 0.25 `shifted`. A model does not know when it is out of its depth; a
shift in what it answers is the first sign that the images are not what it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BINS = 10
WATCH, SHIFTED = 0.1, 0.25  # PSI thresholds: the customary "some change" and "significant change"
SMOOTHING = 0.5  # added to every bin's count, so an empty bin does not make the index infinite
MIN_IMAGES = 50  # fewer scores say too little to call a shift
# shares of a job's images beyond the out-of-distribution threshold, which ~1 % of held-out slices
# of the training sources pass (training.ood.QUANTILE): 5x that is worth a look, 10x a shift
OOD_WATCH, OOD_SHIFTED = 0.05, 0.10


def score_bin(probability: float) -> int:
    """Which of the BINS equal bins of [0, 1] a score falls in (1.0 in the last)."""
    return min(int(probability * BINS), BINS - 1)


def histogram(probabilities: Sequence[float] | np.ndarray) -> list[int]:
    """Counts of scores per bin."""
    counts = np.bincount([score_bin(float(p)) for p in probabilities], minlength=BINS)
    return [int(c) for c in counts]


def reference(probabilities: np.ndarray, threshold: float, split: str) -> dict[str, Any]:
    """The card's reference: held-out scores' histogram and flag rate, and which split they are."""
    return {
        "split": split,
        "images": len(probabilities),
        "histogram": histogram(probabilities),
        "flag_rate": float(np.mean(probabilities >= threshold)) if len(probabilities) else None,
    }


def psi(expected: Sequence[int], actual: Sequence[int]) -> float:
    """Population stability index of `actual` counts per bin against `expected` ones."""
    e = np.asarray(expected, dtype=np.float64) + SMOOTHING
    a = np.asarray(actual, dtype=np.float64) + SMOOTHING
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def drift(
    card_reference: dict[str, Any] | None,
    counts: Sequence[int],
    flagged: int,
    out_of_distribution: int | None = None,
) -> dict[str, Any]:
    """{status, psi, flag_rate, reference_flag_rate, images, out_of_distribution}: the status is
    the worse of the score shift's (PSI) and the out-of-distribution share's (`out_of_distribution`
    images of `counts`' total beyond the model's threshold, training.ood); `unknown` without a
    reference or with fewer than MIN_IMAGES scores."""
    images = int(sum(counts))
    share = out_of_distribution / images if out_of_distribution is not None and images else None
    report: dict[str, Any] = {
        "status": "unknown",
        "psi": None,
        "flag_rate": flagged / images if images else None,
        "reference_flag_rate": (card_reference or {}).get("flag_rate"),
        "images": images,
        "out_of_distribution": share,
    }
    if images < MIN_IMAGES or not (card_reference or share is not None):
        return report
    levels = []
    if card_reference:
        report["psi"] = psi(card_reference["histogram"], counts)
        levels.append(_level(report["psi"], WATCH, SHIFTED))
    if share is not None:
        levels.append(_level(share, OOD_WATCH, OOD_SHIFTED))
    report["status"] = STATUSES[max(levels)]
    return report


STATUSES = ("ok", "watch", "shifted")


def _level(value: float, watch: float, shifted: float) -> int:
    return 2 if value > shifted else 1 if value > watch else 0
