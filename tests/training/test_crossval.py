"""Held-out tasks and their summaries: folds, a source left out, each source left out in turn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.backend import import_backend

import_backend()

from training.crossval import (  # noqa: E402
    FitTask,
    TaskResult,
    cv_tasks,
    leave_one_source_out_tasks,
    summarise_cross_source,
    summarise_cv,
)
from training.dataset import Discovery, ImageRecord  # noqa: E402
from training.grouping import Grouping  # noqa: E402
from training.loading import LoadedImages  # noqa: E402
from training.metrics import compute_metrics  # noqa: E402
from training.prepare import PreparedData  # noqa: E402
from training.recipes import SHIPPED  # noqa: E402


def _data(n_per_source: int = 40, sources: tuple[str, ...] = ("data/a", "data/b", "data/c")) -> PreparedData:
    records = []
    for source in sources:
        for i in range(n_per_source):
            label = i % 2
            records.append(
                ImageRecord(Path(f"/{source}/{i}.png"), f"{i}.png", label, source, "yes" if label else "no")
            )
    n = len(records)
    loaded = LoadedImages(records, np.zeros((n, 8, 8, 1), np.uint8), np.zeros((n, 256), np.float32))
    grouping = Grouping(groups=np.arange(n) // 2, threshold=0.95)  # pairs of images
    mid = np.zeros(n, dtype=bool)
    mid[-10:] = True  # say source c's last ten images are mid-level slices
    return PreparedData(
        Discovery(records), loaded, grouping, "f" * 64, mid, np.zeros(len(records), dtype=bool)
    )


def _scored(data: PreparedData, task: FitTask, seed: int) -> TaskResult:
    """A fit's result with made-up scores: tumours mostly above 0.5."""
    rng = np.random.default_rng(seed)
    y = data.loaded.labels
    score = lambda idx: np.clip(y[idx] * 0.6 + rng.uniform(0, 0.5, len(idx)), 0, 1)  # noqa: E731
    return TaskResult(task, score(task.val), score(task.test), 0.5, 30)


def test_each_source_is_left_out_once_and_only_tested() -> None:
    data = _data()
    tasks = leave_one_source_out_tasks(data, recipe=SHIPPED)
    assert [t.name for t in tasks] == ["left out data/a", "left out data/b", "left out data/c"]
    sources = data.sources
    for task, source in zip(tasks, ("data/a", "data/b", "data/c"), strict=True):
        assert set(sources[task.test]) == {source} and len(task.test) == 40
        assert source not in set(sources[np.concatenate([task.train, task.val])])
    report = summarise_cross_source(data, _scored(data, tasks[2], 1), "data/c")
    assert report["mid_level"]["n"] == 10 and "mid_level" not in summarise_cross_source(
        data, _scored(data, tasks[0], 1), "data/a"
    )


def test_a_source_whose_name_holds_anothers_is_left_out_alone() -> None:
    data = _data(sources=("data/a", "data/ab", "data/c"))
    left_out = {t.name: t for t in leave_one_source_out_tasks(data, recipe=SHIPPED)}
    assert set(data.sources[left_out["left out data/a"].test]) == {"data/a"}
    assert len(left_out["left out data/a"].test) == 40


def test_cross_validation_reports_every_source_and_the_mid_level_slices_pooled() -> None:
    data = _data()
    results = [_scored(data, t, i) for i, t in enumerate(cv_tasks(data, k=4, recipe=SHIPPED))]
    report = summarise_cv(data, results)
    assert report["pooled"]["n"] == 120 and set(report["by_source"]) == {"data/a", "data/b", "data/c"}
    assert sum(s["n"] for s in report["by_source"].values()) == 120
    y, probs = data.loaded.labels, np.zeros(120)
    for r in results:
        probs[r.task.test] = r.probs
    c = np.flatnonzero(data.sources == "data/c")
    by_c = report["by_source"]["data/c"]
    assert by_c["auc"] == compute_metrics(y[c], probs[c], 0.5).auc  # ranked within the source
    assert by_c["tp"] + by_c["fn"] == 20 and report["mid_level"]["n"] == 10
