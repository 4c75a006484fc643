"""Honest accuracy figures: group-aware K-fold cross-validation and a cross-source check.

Each held-out evaluation is a `FitTask`: train on some groups, tune the threshold on other groups,
score a third set nobody trained or tuned on. Tasks run in this process, or with `workers > 1` in
separate processes (worth it on a GPU or a many-core host) while the caller trains the final model.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import multiprocessing
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.backend import threads_per_process
from training.domain import adaptation_split
from training.metrics import compute_metrics, tune_threshold
from training.model import ModelConfig
from training.pipeline import PreparedData, log
from training.splits import carve, group_kfold
from training.train import TrainConfig, fit, predict


@dataclass(frozen=True)
class FitTask:
    """One held-out evaluation: index arrays into the prepared images."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    # slices training may read without their labels (domain_adapt: half the held-out source)
    unlabelled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class Scores:
    """One inference variant's probabilities on a task's validation and test parts."""

    val: np.ndarray
    test: np.ndarray
    threshold: float  # tuned on val


@dataclass(frozen=True)
class TaskResult:
    task: FitTask
    scores: Scores  # as the model is configured to serve
    other: Scores  # with flip TTA toggled: measured in the same run
    best_epoch: int

    @property
    def probs(self) -> np.ndarray:
        return self.scores.test

    @property
    def threshold(self) -> float:
        return self.scores.threshold

    def toggled(self) -> TaskResult:
        """This result as the other inference variant would have given it."""
        return TaskResult(self.task, self.other, self.scores, self.best_epoch)


def save_predictions(path: Path, data: PreparedData, results: list[TaskResult]) -> None:
    """Every held-out fit's validation and test probabilities (both variants), for later analysis
    of threshold policies without retraining: a .npz with one set of arrays per task."""
    arrays: dict[str, np.ndarray] = {
        "labels": data.loaded.labels,
        "groups": data.grouping.groups,
        "relpaths": np.array([f"{r.source}/{r.relpath}" for r in data.loaded.records]),
        "tasks": np.array([r.task.name for r in results]),
    }
    for i, r in enumerate(results):
        arrays.update({f"{i}_val_idx": r.task.val, f"{i}_test_idx": r.task.test})
        for name, scores in (("served", r.scores), ("other", r.other)):
            arrays.update(
                {
                    f"{i}_{name}_val": scores.val,
                    f"{i}_{name}_test": scores.test,
                    f"{i}_{name}_threshold": np.array(scores.threshold),
                }
            )
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def cv_tasks(data: PreparedData, *, k: int, cfg: TrainConfig) -> list[FitTask]:
    """K folds by group; each fold's validation part is carved, by group, from its training part.
    With cfg.domain_adapt the folds need a new site's slices: `HeldOutRuns(unlabelled=...)`."""
    y, groups = data.loaded.labels, data.grouping.groups
    tasks = []
    for i, (rest, test_idx) in enumerate(group_kfold(y, groups, k, cfg.seed)):
        train_idx, val_idx = carve(rest, y, groups, cfg.val_fraction / (1 - 1 / k), cfg.seed + i)
        tasks.append(FitTask(f"fold {i + 1}/{k}", train_idx, val_idx, test_idx))
    return tasks


def cross_source_task(
    data: PreparedData, *, holdout: str, cfg: TrainConfig, adapt_to_holdout: bool = True
) -> FitTask:
    """Train and validate on every source but `holdout`; test on `holdout` alone. With
    cfg.domain_adapt and `adapt_to_holdout`, training also reads half of `holdout`'s groups without
    their labels (`domain.adaptation_split`; the test part stays the whole source); without it, the
    fit reads the slices every task reads (`HeldOutRuns(unlabelled=...)`, a new site's)."""
    held = np.array([fnmatch.fnmatch(r.source, f"*{holdout}*") for r in data.loaded.records])
    if not held.any():
        raise ValueError(f"no images from a source matching {holdout!r}")
    y, groups = data.loaded.labels, data.grouping.groups
    train_idx, val_idx = carve(np.flatnonzero(~held), y, groups, cfg.val_fraction, cfg.seed)
    task = FitTask(f"cross-source {holdout}", train_idx, val_idx, np.flatnonzero(held))
    if cfg.domain_adapt > 0 and adapt_to_holdout:
        task = dataclasses.replace(task, unlabelled=adaptation_split(groups, task.test, cfg.seed)[0])
    return task


def _run(
    x: np.ndarray,
    y: np.ndarray,
    sources: np.ndarray,
    task: FitTask,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    site: np.ndarray | None = None,
    categories: np.ndarray | None = None,
) -> TaskResult:
    """Fit, tune and score one task. `site`: a new site's slices, read unlabelled (domain_adapt)
    by a task that reads none of its own images so. `categories`: every image's label folder."""
    unlabelled = x[task.unlabelled] if len(task.unlabelled) else site
    seen = ""
    if len(task.unlabelled):
        seen = f" (of which {len(task.unlabelled)} read unlabelled in training)"
    elif site is not None and cfg.domain_adapt > 0:
        seen = f"; {len(site)} site slices read unlabelled in training"
    log(f"[{task.name}] train {len(task.train)}, validation {len(task.val)}, test {len(task.test)}{seen}")
    result = fit(
        x[task.train],
        y[task.train],
        x[task.val],
        y[task.val],
        model_cfg=model_cfg,
        cfg=cfg,
        prefix=f"[{task.name}] ",
        sources=sources[task.train],
        unlabelled=unlabelled,
        categories=None if categories is None else categories[task.train],
    )
    variants = []
    for tta in (model_cfg.flip_tta, not model_cfg.flip_tta):
        p_val = predict(result.model, x[task.val], flip_tta=tta)
        threshold = tune_threshold(y[task.val], p_val, cfg.recall_target, cfg.specificity_floor)
        variants.append(Scores(p_val, predict(result.model, x[task.test], flip_tta=tta), threshold))
    served, other = variants
    m = compute_metrics(y[task.test], served.test, served.threshold)
    log(
        f"[{task.name}] recall {m.recall:.4f} specificity {m.specificity:.4f} AUC {m.auc} "
        f"missed {m.fn} at threshold {served.threshold:.4f}"
    )
    return TaskResult(task, served, other, result.best_epoch)


def _run_in_child(
    inputs_path: str,
    y: np.ndarray,
    sources: np.ndarray,
    task: FitTask,
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    threads: int,
    site_path: str | None,
    categories: np.ndarray,
) -> TaskResult:
    from training.backend import import_backend, intra_op_threads

    import_backend(threads)
    log(f"[{task.name}] in its own process, TensorFlow threads: {intra_op_threads()}")
    x = np.load(inputs_path, mmap_mode="r")
    site = np.load(site_path) if site_path else None
    return _run(
        x, y, sources, task, ModelConfig.from_dict(model_cfg), TrainConfig.from_dict(cfg), site, categories
    )


class HeldOutRuns:
    """Runs FitTasks now (workers=1) or in a process pool started at once (workers>1)."""

    def __init__(
        self,
        data: PreparedData,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        workers: int = 1,
        unlabelled: np.ndarray | None = None,
    ) -> None:
        """`unlabelled`: a new site's slices, which every task's fit reads without labels (with
        cfg.domain_adapt), unless the task names slices of its own (`FitTask.unlabelled`)."""
        self.data, self.model_cfg, self.cfg, self.workers = data, model_cfg, cfg, workers
        self.unlabelled = unlabelled
        self._futures: list[Future[TaskResult]] = []
        self._tasks: list[FitTask] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._pool: ProcessPoolExecutor | None = None

    def start(self, tasks: list[FitTask]) -> None:
        self._tasks = tasks
        if self.workers <= 1 or not tasks:
            return
        self._tmp = tempfile.TemporaryDirectory(prefix="brainscan-cv-")
        path = str(Path(self._tmp.name) / "inputs.npy")
        np.save(path, self.data.loaded.inputs)
        site_path = None
        if self.unlabelled is not None:
            site_path = str(Path(self._tmp.name) / "site.npy")
            np.save(site_path, self.unlabelled)
        processes = min(self.workers, len(tasks))
        self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        y = self.data.loaded.labels
        sources, categories = self.data.loaded.sources, self.data.loaded.categories
        threads = threads_per_process(processes)
        self._futures = [
            self._pool.submit(
                _run_in_child,
                path,
                y,
                sources,
                t,
                self.model_cfg.to_dict(),
                self.cfg.to_dict(),
                threads,
                site_path,
                categories,
            )
            for t in tasks
        ]

    def results(self) -> list[TaskResult]:
        if not self._futures:
            x, y = self.data.loaded.inputs, self.data.loaded.labels
            sources, categories = self.data.loaded.sources, self.data.loaded.categories
            return [
                _run(x, y, sources, t, self.model_cfg, self.cfg, self.unlabelled, categories)
                for t in self._tasks
            ]
        try:
            return [f.result() for f in self._futures]
        finally:
            assert self._pool is not None and self._tmp is not None
            self._pool.shutdown()
            self._tmp.cleanup()


def summarise_cv(y: np.ndarray, results: list[TaskResult]) -> dict[str, Any]:
    """Per-fold figures, and pooled ones: the K confusion matrices summed (each at its own fold's
    threshold) and the AUC of all out-of-fold probabilities ranked together."""
    probs, flagged = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
    folds = []
    for r in results:
        probs[r.task.test], flagged[r.task.test] = r.probs, r.probs >= r.threshold
        folds.append(
            {**compute_metrics(y[r.task.test], r.probs, r.threshold).to_dict(), "best_epoch": r.best_epoch}
        )
    tested = np.concatenate([r.task.test for r in results])
    pooled = compute_metrics(y[tested], flagged[tested].astype(float), 0.5).to_dict()
    pooled.update(auc=compute_metrics(y[tested], probs[tested], 0.5).auc, threshold=None)
    spread: dict[str, float] = {}
    for key in ("recall", "specificity", "auc"):
        values = [f[key] for f in folds]
        spread[f"{key}_mean"], spread[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
    return {"k": len(results), "folds": folds, "pooled": pooled, **spread}


def summarise_cross_source(data: PreparedData, result: TaskResult, holdout: str) -> dict[str, Any]:
    """Figures on the held-out source; images whose near-duplicate group also had training or
    validation images are not truly unseen, so they are also reported without them."""
    y, groups, task = data.loaded.labels, data.grouping.groups, result.task
    seen = set(groups[np.concatenate([task.train, task.val])].tolist())
    unseen = np.array([g not in seen for g in groups[task.test]])
    report: dict[str, Any] = {
        "holdout": holdout,
        "all": compute_metrics(y[task.test], result.probs, result.threshold).to_dict(),
        "images_with_a_twin_in_training": int((~unseen).sum()),
    }
    if unseen.any():
        report["without_twins"] = compute_metrics(
            y[task.test][unseen], result.probs[unseen], result.threshold
        ).to_dict()
    return report
