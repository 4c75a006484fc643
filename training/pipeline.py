"""`brainscan train`: every fit of a recipe, then the model file, its plots and its card, once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training import plots
from training.card import ModelCard, card_path_for, file_sha256, library_versions
from training.crossval import (
    FitTask,
    HeldOutRuns,
    ImageFacts,
    TaskResult,
    cross_source_task,
    cv_tasks,
    final_task,
    leave_one_source_out_tasks,
    run_task,
    save_predictions,
    summarise_cross_source,
    summarise_cv,
    summarise_left_out,
)
from training.dataset import Discovery
from training.drift import reference as drift_reference
from training.metrics import compute_metrics, sweep_table
from training.model import build_model
from training.ood import card_entry, fit_on_task, reference_path_for
from training.prepare import PreparedData, log
from training.recipes import Recipe
from training.studies import study_card
from training.train import FitResult, describe_device


def train(
    data: PreparedData,
    recipe: Recipe,
    out_model: Path,
    *,
    cv_folds: int | None = None,
    cross_source: str | None = None,
    leave_one_source_out: bool = False,
    workers: int = 1,
    command: str = "",
    predictions: Path | None = None,
) -> ModelCard:
    """Fit the final model on the recipe's split and, if asked, the held-out fits (K folds by group,
    a source left out, each source left out in turn; with workers > 1 in other processes while the
    final model trains); write the model, its plots, and a card with every figure."""
    tasks: list[FitTask] = cv_tasks(data, k=cv_folds, recipe=recipe) if cv_folds else []
    if cross_source:
        tasks.append(cross_source_task(data, holdout=cross_source, recipe=recipe))
    if leave_one_source_out:
        tasks += leave_one_source_out_tasks(data, recipe=recipe)
    runs = HeldOutRuns(data, recipe, workers)
    runs.start(tasks)
    log(f"recipe {recipe.name or '(unnamed)'}; device: {describe_device()}")
    fitted, final = run_task(data.loaded.inputs, ImageFacts.of(data), final_task(data, recipe), recipe)
    out_model.parent.mkdir(parents=True, exist_ok=True)
    save_for_inference(fitted.model, recipe, out_model)
    ood = _fit_ood(fitted.model, data, final.task, out_model)
    held_out = runs.results()
    if predictions and held_out:
        save_predictions(predictions, data, held_out)
    card = _card(data, recipe, out_model, fitted, final, held_out, cross_source, command)
    card.ood = ood
    if data.subjects:
        y, task = data.loaded.labels, final.task
        card.study = study_card(data.subjects, y, task, final.val_probs, final.probs, final.threshold)
    card.save(card_path_for(out_model))
    return card


def _fit_ood(model: keras.Model, data: PreparedData, task: FitTask, out_model: Path) -> dict[str, Any]:
    """The model's out-of-distribution reference (training.ood), saved beside it: its card entry."""
    reference = fit_on_task(model, data.loaded.inputs, data.loaded.labels, task)
    path = reference_path_for(out_model)
    reference.save(path)
    log(f"out-of-distribution threshold {reference.threshold:.2f} (validation quantile {reference.quantile})")
    return card_entry(reference, path, trained=len(task.train), validated=len(task.val))


def save_for_inference(model: keras.Model, recipe: Recipe, path: Path) -> None:
    """Save the weights in a fresh, uncompiled network: no optimizer state, a third of the size."""
    clean = build_model(recipe.network, recipe.input.size)
    clean.set_weights(model.get_weights())
    clean.save(path)


def _card(
    data: PreparedData,
    recipe: Recipe,
    out_model: Path,
    fitted: FitResult,
    final: TaskResult,
    held_out: Sequence[TaskResult],
    cross_source: str | None,
    command: str,
) -> ModelCard:
    y, task = data.loaded.labels, final.task
    metrics: dict[str, Any] = {
        "validation": compute_metrics(y[task.val], final.val_probs, final.threshold).to_dict()
    }
    eval_labels, eval_probs, eval_name = y[task.val], final.val_probs, "validation"
    if len(task.test):
        metrics["test"] = compute_metrics(y[task.test], final.probs, final.threshold).to_dict()
        eval_labels, eval_probs, eval_name = y[task.test], final.probs, "test"
    folds = [r for r in held_out if r.task.name.startswith("fold")]
    if folds:
        metrics["cv"] = summarise_cv(data, folds)
    if cross_source:
        crossed = next(r for r in held_out if r.task.name == f"cross-source {cross_source}")
        metrics["cross_source"] = summarise_cross_source(data, crossed, cross_source)
    if left_out := summarise_left_out(data, held_out):
        metrics["leave_one_source_out"] = left_out
    histories = fitted.member_histories or (fitted.history,)
    now = dt.datetime.now(dt.UTC)
    return ModelCard(
        version=f"{out_model.stem}-{now:%Y%m%d-%H%M%S}",
        created=now.isoformat(timespec="seconds"),
        threshold=final.threshold,
        recipe=recipe.to_dict(),
        training={
            "epochs_run": len(fitted.history["loss"]),
            "best_epoch": fitted.best_epoch,
            **({"member_best_epochs": list(fitted.member_best_epochs)} if fitted.member_best_epochs else {}),
            "seconds": round(fitted.seconds, 1),
            "device": describe_device(),
            "params": int(fitted.model.count_params()),
            "command": command,
        },
        data=_data_section(data, task),
        metrics=metrics,
        threshold_sweep=sweep_table(eval_labels, eval_probs),
        evaluation_set=eval_name,
        plots=_write_plots(out_model, histories, eval_labels, eval_probs, final.threshold, eval_name),
        libraries=library_versions(),
        model_file=out_model.name,
        model_sha256=file_sha256(out_model),
        reference=drift_reference(eval_probs, final.threshold, eval_name),
    )


def _data_section(data: PreparedData, split: FitTask) -> dict[str, Any]:
    counts = Discovery(images=data.loaded.records).counts()
    return {
        "fingerprint": data.fingerprint,
        "images": len(data.loaded.records),
        **counts,
        "unreadable": len(data.loaded.errors),
        "grouping": data.grouping.summary(),
        "split": {"train": len(split.train), "validation": len(split.val), "test": len(split.test)},
    }


def _write_plots(
    out_model: Path,
    histories: Sequence[dict[str, list[float]]],
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    name: str,
) -> dict[str, str]:
    stem = out_model.stem
    files = {
        k: f"{stem}.{k}.png"
        for k in ("learning_curves", "confusion_matrix", "roc", "threshold_sweep", "reliability")
    }
    folder = out_model.parent
    plots.learning_curves(histories, folder / files["learning_curves"])
    m = compute_metrics(labels, probs, threshold)
    plots.confusion_matrix(m, folder / files["confusion_matrix"], f"{name} set")
    plots.threshold_sweep(sweep_table(labels, probs), folder / files["threshold_sweep"], threshold)
    if m.auc is not None:
        plots.roc(labels, probs, folder / files["roc"], threshold)
        plots.reliability(labels, probs, folder / files["reliability"])
    else:
        del files["roc"], files["reliability"]
    return files
