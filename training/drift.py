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


def drift(card_reference: dict[str, Any] | None, counts: Sequence[int], flagged: int) -> dict[str, Any]:
    """{status, psi, flag_rate, reference_flag_rate, images}: `unknown` without a reference or with
    fewer than MIN_IMAGES scores."""
    images = int(sum(counts))
    report: dict[str, Any] = {
        "status": "unknown",
        "psi": None,
        "flag_rate": flagged / images if images else None,
        "reference_flag_rate": (card_reference or {}).get("flag_rate"),
        "images": images,
        "out_of_distribution": None,  # a per-image measure is not built yet (issue 37)
    }
    if not card_reference or images < MIN_IMAGES:
        return report
    index = psi(card_reference["histogram"], counts)
    report["psi"] = index
    report["status"] = "shifted" if index > SHIFTED else "watch" if index > WATCH else "ok"
    return report
