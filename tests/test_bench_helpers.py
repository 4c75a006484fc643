"""Helpers the benchmarks report figures with (the training runs themselves are too long for CI)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_recall_at_specificity_keeps_the_allowed_false_alarms() -> None:
    variants = _load("variants")
    y = np.array([0] * 10 + [1] * 4)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.85, 0.75, 0.5, 0.05])
    recall, threshold = variants.recall_at_specificity(y, p, 0.80)  # 2 false alarms allowed
    assert 0.8 < threshold <= 0.85
    assert recall == 0.25  # only 0.85 reaches it
    flagged_negatives = int(np.sum(p[y == 0] >= threshold))
    assert flagged_negatives <= 2
    assert variants.recall_at_specificity(y, p, 0.0) == (1.0, 0.0)
    recall, threshold = variants.recall_at_specificity(y, p, 1.0)  # no false alarm at all
    assert threshold > 0.95 and recall == 0.0
