"""Fit tasks: train on some groups, tune the threshold on others, score a third set.

Every fit `brainscan train` makes is a `FitTask` run by `run_task`: the final model's (the recipe's
train / validation / test split) and each held-out evaluation's (group-aware K folds, a source
left out). Held-out tasks run in this process, or with `workers > 1` in separate processes (worth
it on a GPU or a many-core host) while the caller trains the final model.
"""

from __future__ import annotations

import fnmatch
import multiprocessing
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.backend import threads_per_process
from training.dataset import DatasetError
from training.metrics import compute_metrics, pooled_metrics, tune_threshold
from training.prepare import PreparedData, log
from training.recipes import Policy, Recipe
from training.splits import carve, group_kfold, train_val_test
from training.train import FitResult, fit, predict

LEFT_OUT = "left out "  # a leave-one-source-out task's name: LEFT_OUT + its source


@dataclass(frozen=True)
class FitTask:
    """One fit: index arrays into the prepared images."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class ImageFacts:
    """What a fit needs to know of each prepared image besides its pixels."""

    labels: np.ndarray
    sources: np.ndarray  # each image's source name (source-balanced loss weights)
    tumour_edge: np.ndarray  # its scan's first or last tumour slice (the policy's recall count)

    @classmethod
    def of(cls, data: PreparedData) -> ImageFacts:
        return cls(data.loaded.labels, data.sources, data.tumour_edge)


@dataclass(frozen=True)
class TaskResult:
    """A task's probabilities on its validation and test parts, and the threshold tuned on the first."""

    task: FitTask
    val_probs: np.ndarray
    probs: np.ndarray  # on task.test
    threshold: float
    best_epoch: int


def final_task(data: PreparedData, recipe: Recipe) -> FitTask:
    """The shipped model's fit: train, validation and test parts drawn by group."""
    p = recipe.policy
    split = train_val_test(
        data.loaded.labels, data.grouping.groups, val=p.val_fraction, test=p.test_fraction, seed=p.seed
    )
    return FitTask("final", split.train, split.val, split.test)


def cv_tasks(data: PreparedData, *, k: int, recipe: Recipe) -> list[FitTask]:
    """K folds by group; each fold's validation part is carved, by group, from its training part."""
    y, groups, p = data.loaded.labels, data.grouping.groups, recipe.policy
    tasks = []
    for i, (rest, test_idx) in enumerate(group_kfold(y, groups, k, p.seed)):
        train_idx, val_idx = carve(rest, y, groups, p.val_fraction / (1 - 1 / k), p.seed + i)
        tasks.append(FitTask(f"fold {i + 1}/{k}", train_idx, val_idx, test_idx))
    return tasks


def leave_one_source_out_tasks(data: PreparedData, *, recipe: Recipe) -> list[FitTask]:
    """One task per source: trained and validated on the others, tested on it."""
    sources = data.sources
    return [
        _source_task(data, f"{LEFT_OUT}{source}", sources == source, recipe)
        for source in sorted(set(sources.tolist()))
    ]


def cross_source_task(data: PreparedData, *, holdout: str, recipe: Recipe) -> FitTask:
    """Train and validate on every source but those matching `holdout`; test on those alone."""
    held = np.array([fnmatch.fnmatch(source, f"*{holdout}*") for source in data.sources])
    if not held.any():
        raise DatasetError(f"--cross-source {holdout}: no images from a source matching it")
    return _source_task(data, f"cross-source {holdout}", held, recipe)


def _source_task(data: PreparedData, name: str, held: np.ndarray, recipe: Recipe) -> FitTask:
    """Test on the `held` images; train on the rest but a validation part carved from it by group."""
    y, groups, p = data.loaded.labels, data.grouping.groups, recipe.policy
    train_idx, val_idx = carve(np.flatnonzero(~held), y, groups, p.val_fraction, p.seed)
    return FitTask(name, train_idx, val_idx, np.flatnonzero(held))


def run_task(x: np.ndarray, facts: ImageFacts, task: FitTask, recipe: Recipe) -> tuple[FitResult, TaskResult]:
    """Fit on the task's training part, tune the threshold on its validation part by the recipe's
    policy, score its test part."""
    y = facts.labels
    log(f"[{task.name}] train {len(task.train)}, validation {len(task.val)}, test {len(task.test)}")
    fitted = fit(
        x[task.train],
        y[task.train],
        x[task.val],
        y[task.val],
        network=recipe.network,
        optimisation=recipe.optimisation,
        seed=recipe.policy.seed,
        prefix=f"[{task.name}] ",
        sources=facts.sources[task.train],
    )
    p_val = predict(fitted.model, x[task.val])
    threshold = policy_threshold(y[task.val], p_val, facts.tumour_edge[task.val], recipe.policy)
    result = TaskResult(task, p_val, predict(fitted.model, x[task.test]), threshold, fitted.best_epoch)
    if len(task.test):
        m = compute_metrics(y[task.test], result.probs, threshold)
        log(
            f"[{task.name}] recall {m.recall:.4f} specificity {m.specificity:.4f} "
            f"AUC {m.auc if m.auc is None else round(m.auc, 4)} "
            f"missed {m.fn} at threshold {threshold:.4f}"
        )
    return fitted, result


def policy_threshold(labels: np.ndarray, probs: np.ndarray, tumour_edge: np.ndarray, policy: Policy) -> float:
    """The threshold the policy picks on validation scores: the recall target (counted without
    each scan's first and last tumour slice unless `recall_counts_edges`), then the floor."""
    counted = np.ones(len(labels), dtype=bool) if policy.recall_counts_edges else ~tumour_edge
    return tune_threshold(labels[counted], probs[counted], policy.recall_target, policy.specificity_floor)


def save_predictions(path: Path, data: PreparedData, results: list[TaskResult]) -> None:
    """Every held-out fit's validation and test probabilities and threshold, for later analysis
    without retraining: a .npz with one set of arrays per task."""
    arrays: dict[str, np.ndarray] = {
        "labels": data.loaded.labels,
        "groups": data.grouping.groups,
        "relpaths": np.array([f"{r.source}/{r.relpath}" for r in data.loaded.records]),
        "sources": data.sources,
        "tasks": np.array([r.task.name for r in results]),
    }
    for i, r in enumerate(results):
        arrays.update(
            {
                f"{i}_val_idx": r.task.val,
                f"{i}_test_idx": r.task.test,
                f"{i}_val": r.val_probs,
                f"{i}_test": r.probs,
                f"{i}_threshold": np.array(r.threshold),
            }
        )
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def _run_in_child(
    inputs_path: str, facts: ImageFacts, task: FitTask, recipe: dict[str, Any], threads: int
) -> TaskResult:
    from training.backend import import_backend, intra_op_threads

    import_backend(threads)
    log(f"[{task.name}] in its own process, TensorFlow threads: {intra_op_threads()}")
    return run_task(np.load(inputs_path, mmap_mode="r"), facts, task, Recipe.from_dict(recipe))[1]


class HeldOutRuns:
    """Runs held-out FitTasks now (workers=1) or in a process pool started at once (workers>1)."""

    def __init__(self, data: PreparedData, recipe: Recipe, workers: int = 1) -> None:
        self.data, self.recipe, self.workers = data, recipe, workers
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
        processes = min(self.workers, len(tasks))
        self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        threads = threads_per_process(processes)
        recipe, facts = self.recipe.to_dict(), ImageFacts.of(self.data)
        self._futures = [self._pool.submit(_run_in_child, path, facts, t, recipe, threads) for t in tasks]

    def results(self) -> list[TaskResult]:
        if not self._futures:
            x, facts = self.data.loaded.inputs, ImageFacts.of(self.data)
            return [run_task(x, facts, t, self.recipe)[1] for t in self._tasks]
        try:
            return [f.result() for f in self._futures]
        finally:
            assert self._pool is not None and self._tmp is not None
            self._pool.shutdown()
            self._tmp.cleanup()


def summarise_cv(data: PreparedData, results: list[TaskResult]) -> dict[str, Any]:
    """Per-fold figures, and pooled ones: the K confusion matrices summed (each at its own fold's
    threshold) and the AUC of all out-of-fold probabilities ranked together; the same pooled
    figures per source when there are several, and on mid-level slices (`grouping.mid_levels`)."""
    y = data.loaded.labels
    probs, flagged = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
    folds = []
    for r in results:
        probs[r.task.test], flagged[r.task.test] = r.probs, r.probs >= r.threshold
        folds.append(
            {**compute_metrics(y[r.task.test], r.probs, r.threshold).to_dict(), "best_epoch": r.best_epoch}
        )
    tested = np.concatenate([r.task.test for r in results])
    spread: dict[str, float] = {}
    for key in ("recall", "specificity", "auc"):
        values = [f[key] for f in folds]
        spread[f"{key}_mean"], spread[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
    report: dict[str, Any] = {"k": len(results), "folds": folds, "pooled": _pooled(y, probs, flagged, tested)}
    sources = data.sources
    if len(set(sources[tested].tolist())) > 1:
        report["by_source"] = {
            source: _pooled(y, probs, flagged, tested[sources[tested] == source])
            for source in sorted(set(sources[tested].tolist()))
        }
    mid = tested[data.mid_level[tested]]
    if len(mid):
        report["mid_level"] = _pooled(y, probs, flagged, mid)
    return {**report, **spread}


def _pooled(y: np.ndarray, probs: np.ndarray, flagged: np.ndarray, idx: np.ndarray) -> dict[str, Any]:
    """Figures of held-out images `idx`: each flagged at its own fit's threshold, ranked together."""
    return {**pooled_metrics(y[idx], probs[idx], flagged[idx]).to_dict(), "threshold": None}


def summarise_left_out(data: PreparedData, results: Sequence[TaskResult]) -> dict[str, Any]:
    """The card's leave_one_source_out entry: per source left out, its figures, from the results
    of `leave_one_source_out_tasks` (other tasks among `results` are passed over)."""
    sources = {r.task.name.removeprefix(LEFT_OUT): r for r in results if r.task.name.startswith(LEFT_OUT)}
    return {source: summarise_cross_source(data, r, source) for source, r in sources.items()}


def summarise_cross_source(data: PreparedData, result: TaskResult, holdout: str) -> dict[str, Any]:
    """Figures on the held-out source; images whose near-duplicate group also had training or
    validation images are not truly unseen, so they are also reported without them; and on its
    mid-level slices (`grouping.mid_levels`) where it has any."""
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
    mid = data.mid_level[task.test]
    if mid.any():
        report["mid_level"] = compute_metrics(
            y[task.test][mid], result.probs[mid], result.threshold
        ).to_dict()
    return report
