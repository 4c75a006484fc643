"""`brainscan train`: discover, load, group, split, fit, tune, evaluate, and package model + card."""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training import plots
from training.card import ModelCard, card_path_for, file_sha256, library_versions
from training.dataset import DatasetError, Discovery, ImageRecord, discover
from training.grouping import DEFAULT_THRESHOLD, Grouping, group_near_duplicates
from training.loading import LoadedImages, load_images
from training.metrics import compute_metrics, sweep_table, tune_threshold
from training.model import ModelConfig
from training.preprocess import PreprocessSpec
from training.splits import train_val_test
from training.train import TrainConfig, describe_device, fit, predict


@dataclass
class PreparedData:
    """Labelled, decoded, grouped images ready for splitting."""

    discovery: Discovery
    loaded: LoadedImages
    grouping: Grouping
    fingerprint: str


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def select_records(
    found: Discovery, *, exclude: Sequence[str] = (), limit: int | None = None, seed: int = 0
) -> list[ImageRecord]:
    """Labelled records, minus excluded sources/paths, optionally a stratified sample of `limit`."""
    records = [
        r for r in found.images
        if r.label is not None and not any(_matches(r, pattern) for pattern in exclude)
    ]
    if limit is not None and limit < len(records):
        rng = np.random.default_rng(seed)
        by_label = {lab: [r for r in records if r.label == lab] for lab in (0, 1)}
        share = {lab: round(limit * len(rs) / len(records)) for lab, rs in by_label.items()}
        picked = [
            rs[i] for lab, rs in by_label.items()
            for i in sorted(rng.choice(len(rs), min(share[lab], len(rs)), replace=False))
        ]
        records = sorted(picked, key=lambda r: (r.source, r.relpath))
    if not records:
        raise DatasetError("no labelled images to train on (check folder names or labels.csv)")
    return records


def _matches(record: ImageRecord, pattern: str) -> bool:
    return (
        fnmatch.fnmatch(record.source, f"*{pattern}*")
        or fnmatch.fnmatch(str(record.path), pattern)
    )


def data_fingerprint(records: Sequence[ImageRecord]) -> str:
    """SHA-256 over every (relative path, content hash): identifies the exact training data."""
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.source, r.relpath)):
        digest.update(f"{r.source}/{r.relpath}\0{file_sha256(r.path)}\n".encode())
    return digest.hexdigest()


def prepare(
    roots: Sequence[Path],
    spec: PreprocessSpec,
    *,
    exclude: Sequence[str] = (),
    limit: int | None = None,
    seed: int = 0,
    group_threshold: float = DEFAULT_THRESHOLD,
) -> PreparedData:
    """Discover labelled images, decode them once, and group near-duplicates."""
    found = discover(roots)
    records = select_records(found, exclude=exclude, limit=limit, seed=seed)
    log(f"found {len(found.images)} images; training on {len(records)} labelled ones")
    loaded = load_images(records, spec, progress=True)
    for path, reason in loaded.errors:
        log(f"  unreadable, skipped: {path}: {reason}")
    grouping = group_near_duplicates(loaded.fingerprints, group_threshold)
    s = grouping.summary()
    log(
        f"near-duplicate groups: {s['groups']} groups for {s['images']} images; "
        f"{s['images_in_multi_image_groups']} images sit in {s['multi_image_groups']} "
        f"multi-image groups (largest {s['largest_group']})"
    )
    return PreparedData(found, loaded, grouping, data_fingerprint(loaded.records))


def train_and_package(
    data: PreparedData,
    out_model: Path,
    *,
    spec: PreprocessSpec,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
) -> ModelCard:
    """Split, fit, tune the threshold on validation, test, then write model, plots and card."""
    labels, groups = data.loaded.labels, data.grouping.groups
    split = train_val_test(labels, groups, val=cfg.val_fraction, test=cfg.test_fraction,
                           seed=cfg.seed)
    x = data.loaded.inputs
    log(f"split by group: train {len(split.train)}, validation {len(split.val)}, "
        f"test {len(split.test)}; device: {describe_device()}")
    result = fit(x[split.train], labels[split.train], x[split.val], labels[split.val],
                 model_cfg=model_cfg, cfg=cfg, sources=data.loaded.sources[split.train])
    tta = model_cfg.flip_tta
    p_val = predict(result.model, x[split.val], flip_tta=tta)
    threshold = tune_threshold(labels[split.val], p_val, cfg.recall_target, cfg.specificity_floor)
    metrics: dict[str, Any] = {"validation": compute_metrics(labels[split.val], p_val, threshold).to_dict()}
    eval_labels, eval_probs, eval_name = labels[split.val], p_val, "validation"
    if len(split.test):
        p_test = predict(result.model, x[split.test], flip_tta=tta)
        metrics["test"] = compute_metrics(labels[split.test], p_test, threshold).to_dict()
        eval_labels, eval_probs, eval_name = labels[split.test], p_test, "test"
    out_model.parent.mkdir(parents=True, exist_ok=True)
    save_for_inference(result.model, model_cfg, out_model)
    histories = result.member_histories or (result.history,)
    plot_files = _write_plots(out_model, histories, eval_labels, eval_probs, threshold, eval_name)
    card = ModelCard(
        version=f"{out_model.stem}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}",
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        threshold=threshold,
        recall_target=cfg.recall_target,
        specificity_floor=cfg.specificity_floor,
        input=spec.to_dict(),
        architecture=model_cfg.to_dict(),
        training={**cfg.to_dict(), "epochs_run": len(result.history["loss"]),
                  "best_epoch": result.best_epoch, "seconds": round(result.seconds, 1),
                  "device": describe_device(), "params": int(result.model.count_params()),
                  **({"member_best_epochs": list(result.member_best_epochs)}
                     if result.member_best_epochs else {}),
                  **({"teacher_best_epochs": list(result.teacher_best_epochs)}
                     if result.teacher_best_epochs else {})},
        data=_data_section(data, split),
        metrics=metrics,
        threshold_sweep=sweep_table(eval_labels, eval_probs),
        evaluation_set=eval_name,
        plots=plot_files,
        libraries=library_versions(),
        model_file=out_model.name,
        model_sha256=file_sha256(out_model),
    )
    card.save(card_path_for(out_model))
    return card


def save_for_inference(model: Any, model_cfg: ModelConfig, path: Path) -> None:
    """Save the weights in a fresh, uncompiled network: no optimizer state, a third of the size."""
    from training.model import build_model, for_serving

    clean = build_model(model_cfg)
    clean.set_weights(model.get_weights())
    for_serving(clean, model_cfg).save(path)


def _data_section(data: PreparedData, split: Any) -> dict[str, Any]:
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
    out_model: Path, histories: Sequence[dict[str, list[float]]], labels: np.ndarray, probs: np.ndarray,
    threshold: float, name: str,
) -> dict[str, str]:
    stem = out_model.stem
    files = {k: f"{stem}.{k}.png" for k in
             ("learning_curves", "confusion_matrix", "roc", "threshold_sweep", "reliability")}
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
