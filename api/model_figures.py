"""The model card's figures as table rows for the model page: test, cross-validation, cross-source.

Cards grow new sections over time, so this reads them by shape: any dict holding `recall` is a
row of metrics; dicts and lists of dicts around it are walked and named (`cv · fold 3`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COLUMNS = ("n", "tp", "fp", "tn", "fn", "recall", "specificity", "precision", "accuracy", "auc", "threshold")
ORDER = ("test", "cv", "cross_source", "leave_one_source_out", "validation")
TITLES = {
    "test": "Test split",
    "cv": "Cross-validation",
    "cross_source": "Cross-source",
    "validation": "Validation split",
    "pooled": "pooled over folds",
    "all": "all held-out images",
    "without_twins": "without near-duplicates of training images",
    "leave_one_source_out": "Each source left out",
    "by_source": "by source",
    "mid_level": "mid-level slices (where a tumour would be)",
}


@dataclass(frozen=True, slots=True)
class Figure:
    """One row: what was measured, its metrics, and a note (spread over folds, the held-out source)."""

    name: str
    metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _title(key: str) -> str:
    return TITLES.get(key, key.replace("_", " "))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _notes(section: dict[str, Any]) -> list[str]:
    notes = []
    for key, value in section.items():
        if key.endswith("_mean") and f"{key[:-5]}_std" in section:
            metric = key[:-5]
            notes.append(f"{metric} {value:.3f} ± {section[f'{metric}_std']:.3f} over folds")
        elif _is_scalar(value) and not key.endswith("_std"):
            notes.append(f"{key.replace('_', ' ')}: {value}")
    return notes


def _rows(name: str, section: dict[str, Any]) -> list[Figure]:
    if "recall" in section:
        return [Figure(name, section)]
    rows: list[Figure] = []
    for key, value in section.items():
        if isinstance(value, dict):
            rows += _rows(f"{name} · {_title(key)}", value)
        elif isinstance(value, list):
            for i, item in enumerate(value, start=1):
                if isinstance(item, dict):
                    rows += _rows(f"{name} · {key.rstrip('s')} {i}", item)
    notes = _notes(section)
    if rows and notes:
        rows[0] = Figure(rows[0].name, rows[0].metrics, [*rows[0].notes, *notes])
    return rows


def card_figures(metrics: dict[str, Any]) -> list[Figure]:
    """Rows for every measured set in the card's metrics, the headline ones first."""
    keys = [k for k in ORDER if k in metrics] + [k for k in metrics if k not in ORDER]
    rows: list[Figure] = []
    for key in keys:
        if isinstance(metrics[key], dict):
            rows += _rows(_title(key), metrics[key])
    return rows


def sweep_rows(sweep: list[Any], chosen: float | None) -> list[dict[str, Any]]:
    """The card's threshold sweep, each row marked when it is the step nearest the chosen threshold."""
    rows = [row for row in sweep if isinstance(row, dict) and "threshold" in row]
    if chosen is not None and rows:
        nearest = min(rows, key=lambda row: abs(float(row["threshold"]) - chosen))
        rows = [{**row, "nearest": row is nearest} for row in rows]
    return rows
