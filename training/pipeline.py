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
from training.grouping import DEFAULT_THRESHOLD, Grouping, group_near_duplicates, near_duplicates_of
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


@dataclass
class AdaptationData:
    """A new site's slices that training reads without labels (`--adapt-to`, cfg.domain_adapt)."""

    folder: str  # resolved
    inputs: np.ndarray  # uint8 (n, size, size, 1), as the training images
    found: int  # images under the folder, before sampling
    unreadable: int
    near_duplicates: int  # of training images (kept)
    fingerprint: str

    def summary(self) -> dict[str, Any]:
        """The card's record of what training read, and that it read no label."""
        return {
            "folder": self.folder,
            "images": len(self.inputs),
            "found": self.found,
            "unreadable": self.unreadable,
            "near_duplicates_of_training": self.near_duplicates,
            "fingerprint": self.fingerprint,
            "labels_read": False,
        }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def select_records(
    found: Discovery, *, exclude: Sequence[str] = (), limit: int | None = None, seed: int = 0
) -> list[ImageRecord]:
    """Labelled records, minus excluded sources/paths, optionally a stratified sample of `limit`."""
    records = [
        r
        for r in found.images
        if r.label is not None and not any(_matches(r, pattern) for pattern in exclude)
    ]
    if limit is not None and limit < len(records):
        rng = np.random.default_rng(seed)
        by_label = {lab: [r for r in records if r.label == lab] for lab in (0, 1)}
        share = {lab: round(limit * len(rs) / len(records)) for lab, rs in by_label.items()}
        picked = [
            rs[i]
            for lab, rs in by_label.items()
            for i in sorted(rng.choice(len(rs), min(share[lab], len(rs)), replace=False))
        ]
        records = sorted(picked, key=lambda r: (r.source, r.relpath))
    if not records:
        raise DatasetError("no labelled images to train on (check folder names or labels.csv)")
    return records


def _matches(record: ImageRecord, pattern: str) -> bool:
    return fnmatch.fnmatch(record.source, f"*{pattern}*") or fnmatch.fnmatch(str(record.path), pattern)


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
    loaded = _load(records, spec)
    grouping = group_near_duplicates(loaded.fingerprints, group_threshold)
    s = grouping.summary()
    log(
        f"near-duplicate groups: {s['groups']} groups for {s['images']} images; "
        f"{s['images_in_multi_image_groups']} images sit in {s['multi_image_groups']} "
        f"multi-image groups (largest {s['largest_group']})"
    )
    return PreparedData(found, loaded, grouping, data_fingerprint(loaded.records))


def _load(records: Sequence[ImageRecord], spec: PreprocessSpec) -> LoadedImages:
    """Decode with progress; each unreadable file is logged and skipped."""
    loaded = load_images(records, spec, progress=True)
    for path, reason in loaded.errors:
        log(f"  unreadable, skipped: {path}: {reason}")
    return loaded


def prepare_adaptation(
    root: Path, spec: PreprocessSpec, training: PreparedData, *, limit: int, seed: int = 0
) -> AdaptationData:
    """Decode a sample of at most `limit` images under `root` for domain-adversarial training,
    ignoring any label they carry. Training images are refused (the folder must be the new site's,
    not training data); near-duplicates of training images are counted and kept: leaving them out
    would change the mix of the site's slices the network aligns to (e.g. 96 of seed-253's 98
    clear slices have a twin in the 4-class set, and a tumour-only target skews the features)."""
    found = discover([root])
    training_paths = {r.path for r in training.loaded.records}
    shared = [r for r in found.images if r.path in training_paths]
    if shared:
        raise DatasetError(
            f"{len(shared)} of the {len(found.images)} images under {root} are training "
            f"images too (e.g. {shared[0].path}): adapt to a folder of the new site's "
            "slices that training does not read (or --exclude that source)"
        )
    records = found.images
    if len(records) > limit:
        picked = np.random.default_rng(seed).choice(len(records), limit, replace=False)
        records = [records[i] for i in sorted(picked)]
    log(f"adapting to {root}: {len(found.images)} images found, reading {len(records)} without their labels")
    loaded = _load(records, spec)
    if not loaded.records:
        raise DatasetError(f"none of the {len(records)} images under {root} could be read")
    twins = near_duplicates_of(loaded.fingerprints, training.loaded.fingerprints, training.grouping.threshold)
    if twins.any():  # kept: leaving them out would skew what the site's slices look like
        log(f"  {int(twins.sum())} of them are near-duplicates of training images")
    return AdaptationData(
        str(root.resolve()),
        loaded.inputs,
        len(found.images),
        len(loaded.errors),
        int(twins.sum()),
        data_fingerprint(loaded.records),
    )


def train_and_package(
    data: PreparedData,
    out_model: Path,
    *,
    spec: PreprocessSpec,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    adaptation: AdaptationData | None = None,
) -> ModelCard:
    """Split, fit, tune the threshold on validation, test, then write model, plots and card.
    `adaptation`: a new site's unlabelled slices, read when cfg.domain_adapt > 0."""
    labels, groups = data.loaded.labels, data.grouping.groups
    split = train_val_test(labels, groups, val=cfg.val_fraction, test=cfg.test_fraction, seed=cfg.seed)
    x = data.loaded.inputs
    log(
        f"split by group: train {len(split.train)}, validation {len(split.val)}, "
        f"test {len(split.test)}; device: {describe_device()}"
    )
    result = fit(
        x[split.train],
        labels[split.train],
        x[split.val],
        labels[split.val],
        model_cfg=model_cfg,
        cfg=cfg,
        sources=data.loaded.sources[split.train],
        unlabelled=adaptation.inputs if adaptation else None,
        categories=data.loaded.categories[split.train],
    )
    tta = model_cfg.flip_tta
    p_val = predict(result.model, x[split.val], flip_tta=tta)
    threshold = tune_threshold(labels[split.val], p_val, cfg.recall_target, cfg.specificity_floor)
    metrics: dict[str, Any] = {"validation": compute_metrics(labels[split.val], p_val, threshold).to_dict()}
    eval_labels, eval_probs, eval_name = labels[split.val], p_val, "validation"
    if len(split.test):
        p_test = predict(result.model, x[split.test], flip_tta=tta)
        metrics["test"] = compute_metrics(labels[split.test], p_test, threshold).to_dict()
        eval_labels, eval_probs, eval_name = labels[split.test], p_test, "test"
    site: dict[str, Any] = {}
    if adaptation is not None:  # no labels there: how many the model would flag is what is known
        flagged = predict(result.model, adaptation.inputs, flip_tta=tta) >= threshold
        site = {**adaptation.summary(), "flagged_at_threshold": int(flagged.sum())}
        log(
            f"adapted to {adaptation.folder}: {int(flagged.sum())} of {len(flagged)} of its slices "
            "flagged at the tuned threshold (no labels read: measure it there with brainscan evaluate)"
        )
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
        training={
            **cfg.to_dict(),
            "epochs_run": len(result.history["loss"]),
            "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 1),
            "device": describe_device(),
            "params": int(result.model.count_params()),
            **({"member_best_epochs": list(result.member_best_epochs)} if result.member_best_epochs else {}),
            **(
                {"teacher_best_epochs": list(result.teacher_best_epochs)}
                if result.teacher_best_epochs
                else {}
            ),
        },
        data={**_data_section(data, split), **({"adaptation": site} if site else {})},
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
